//! Weighted fair queueing of waiting requests between callers (start-time fair queueing):
//! each request gets a virtual finish tag `max(V, last tag of its class) + 1 / weight`, and the
//! next turn goes to the smallest tag. A class that sends little gets a tag close to `V`, so it
//! is served within about one turn however long another class's backlog is; a class alone
//! gets every turn; backlogged classes share turns in proportion to their weights. A class
//! that was idle earns no credit: its next tag starts from `V`.

use std::collections::VecDeque;
use std::sync::Arc;

struct Class<T> {
    name: Arc<str>,
    weight: f64,
    last_tag: f64,
    items: VecDeque<(f64, T)>,
}

/// Waiting items by class, served in weighted fair order.
pub struct FairQueue<T> {
    classes: Vec<Class<T>>,
    virtual_time: f64,
    len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        Self {
            classes: Vec::new(),
            virtual_time: 0.0,
            len: 0,
        }
    }
}

impl<T> FairQueue<T> {
    /// Items waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `item` for `class` (weight at least 1).
    pub fn push(&mut self, class: &str, weight: u32, item: T) {
        let weight = f64::from(weight.max(1));
        let v = self.virtual_time;
        let c = match self.classes.iter().position(|c| &*c.name == class) {
            Some(i) => &mut self.classes[i],
            None => {
                self.classes.push(Class {
                    name: class.into(),
                    weight,
                    last_tag: v,
                    items: VecDeque::new(),
                });
                self.classes.last_mut().expect("just pushed")
            }
        };
        c.weight = weight;
        let tag = c.last_tag.max(v) + 1.0 / weight;
        c.last_tag = tag;
        c.items.push_back((tag, item));
        self.len += 1;
    }

    /// The next item in fair order, with its class.
    pub fn pop(&mut self) -> Option<(Arc<str>, T)> {
        let i = self
            .classes
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.items.front().map(|(tag, _)| (i, *tag)))
            .min_by(|a, b| a.1.total_cmp(&b.1))?
            .0;
        let (tag, item) = self.classes[i].items.pop_front().expect("non-empty head");
        let name = self.classes[i].name.clone();
        self.virtual_time = self.virtual_time.max(tag);
        self.len -= 1;
        // An empty class whose tags are all behind V holds nothing worth keeping.
        let v = self.virtual_time;
        self.classes
            .retain(|c| !c.items.is_empty() || c.last_tag > v);
        Some((name, item))
    }

    /// Drops the items `keep` refuses (waiters that gave up).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for c in &mut self.classes {
            c.items.retain(|(_, item)| keep(item));
        }
        self.len = self.classes.iter().map(|c| c.items.len()).sum();
    }

    /// How many turns would go before a new item of `class` (itself included): its own queue,
    /// plus what every other waiting class gets meanwhile in proportion to its weight.
    pub fn turns_before(&self, class: &str, weight: u32) -> f64 {
        let weight = f64::from(weight.max(1));
        let own = self
            .classes
            .iter()
            .find(|c| &*c.name == class)
            .map_or(0, |c| c.items.len()) as f64
            + 1.0;
        own + self
            .classes
            .iter()
            .filter(|c| &*c.name != class)
            .map(|c| (c.items.len() as f64).min(own * c.weight / weight))
            .sum::<f64>()
    }

    /// Waiting items per class.
    pub fn waiting(&self) -> Vec<(Arc<str>, usize)> {
        self.classes
            .iter()
            .filter(|c| !c.items.is_empty())
            .map(|c| (c.name.clone(), c.items.len()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(q: &mut FairQueue<u32>, n: usize) -> Vec<String> {
        (0..n)
            .filter_map(|_| q.pop())
            .map(|(c, _)| c.to_string())
            .collect()
    }

    #[test]
    fn a_polite_class_is_served_next_whatever_the_backlog() {
        let mut q = FairQueue::default();
        for i in 0..64 {
            q.push("bulk", 1, i);
        }
        assert_eq!(order(&mut q, 3), ["bulk", "bulk", "bulk"]);
        q.push("ap-export", 1, 0);
        // Its tag ties with the backlog's head: one of the next two turns is its.
        assert!(order(&mut q, 2).contains(&"ap-export".to_owned()));
        assert_eq!(q.len(), 60);
    }

    #[test]
    fn backlogged_classes_share_by_weight() {
        let mut q = FairQueue::default();
        for i in 0..300 {
            q.push("a", 1, i);
            q.push("b", 2, i);
        }
        let first: Vec<String> = order(&mut q, 300);
        let b = first.iter().filter(|c| *c == "b").count();
        assert!((195..=205).contains(&b), "b got {b} of 300 turns");
        let mut q = FairQueue::default();
        for i in 0..100 {
            q.push("x", 1, i);
            q.push("y", 1, i);
        }
        let x = order(&mut q, 100).iter().filter(|c| *c == "x").count();
        assert_eq!(x, 50, "equal weights alternate");
    }

    #[test]
    fn an_idle_class_earns_no_credit() {
        let mut q = FairQueue::default();
        q.push("quiet", 1, 0);
        q.pop();
        for i in 0..10 {
            q.push("busy", 1, i);
        }
        order(&mut q, 5);
        for i in 0..5 {
            q.push("quiet", 1, i);
        }
        // Interleaved from now on, not five quiet turns in a row for the time it was away.
        let next = order(&mut q, 4);
        assert_eq!(next.iter().filter(|c| *c == "quiet").count(), 2, "{next:?}");
        assert_ne!(next[0], next[1], "{next:?}");
        assert_ne!(next[2], next[3], "{next:?}");
    }

    #[test]
    fn given_up_items_leave_and_estimates_follow_the_weights() {
        let mut q = FairQueue::default();
        for i in 0..10 {
            q.push("a", 1, i);
        }
        q.retain(|i| i % 2 == 0);
        assert_eq!(q.len(), 5);
        assert_eq!(q.turns_before("b", 1), 2.0, "b's one turn and one of a's");
        assert_eq!(q.turns_before("a", 1), 6.0);
        assert_eq!(q.turns_before("b", 5), 1.2);
        assert_eq!(q.waiting(), vec![("a".into(), 5)]);
    }
}
