//! The project's own ai.onnx.ml `TreeEnsembleClassifier` / `TreeEnsembleRegressor`,
//! written from the ONNX operator specification.
//!
//! [`EnsembleDef`] holds the operator attributes as the ONNX node states them;
//! [`EnsembleDef::compile`] checks them and lays the trees out for evaluation:
//! every node of every tree in one flat array of 16-byte nodes (pre-order per tree, so
//! the true child usually follows its parent), child links resolved to array indices.
//! A leaf links to itself on both sides, so a walk of a tree's depth in steps ends on
//! the leaf whatever the path length: the walk loop has no per-step exit test, and the
//! leaf's weights are found by its node index.
//! [`CompiledEnsemble::eval`] walks several independent paths together so that the
//! memory latency of one path's next node hides behind the others: [`ROW_LANES`] rows
//! through one tree in bulk, one row through [`TREE_LANES`] trees for the remainder rows
//! (a single-row call is all remainder). When every branch shares one comparison (an
//! XGBoost export is `BRANCH_LT` throughout) the walk is compiled for that comparison.
//! Leaf weights are added to each row's sums in tree order in both walks, so the result
//! does not depend on batch size or position.
//!
//! Semantics (ONNX spec; where the spec is silent, onnxruntime's behaviour):
//! - a branch goes to the true child when `x <mode> threshold` holds, or when `x` is NaN
//!   and the node's `missing_value_tracks_true` is set; NaN compares false otherwise
//!   (so a NaN goes true at `BRANCH_NEQ` only);
//! - a classifier sums the leaf weights of each class over the trees, adds `base_values`
//!   and applies `post_transform`; the label is the class of the highest score (first on
//!   ties);
//! - a binary classifier whose leaves all carry one class id holds a single score `s`
//!   (the positive class's margin). Its base value is the single element of
//!   `base_values` (the positive class's element when there are two), and its
//!   output is `[1 − σ(s), σ(s)]` (computed as `[σ(−s), σ(s)]`) under `LOGISTIC`; without
//!   a logistic it is `[1 − s, s]` when every leaf weight is non-negative (probability
//!   leaves) and `[−s, s]` otherwise, as onnxruntime does;
//! - a regressor aggregates each target over the trees (`SUM`, `AVERAGE`, `MIN`, `MAX`),
//!   adds `base_values` and applies `post_transform`.

#![allow(clippy::needless_range_loop)]

use std::collections::HashMap;

use ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::error::{BmsError, Result};

/// Comparison of a branch node, or a leaf (`nodes_modes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeMode {
    BranchLeq,
    BranchLt,
    BranchGte,
    BranchGt,
    BranchEq,
    BranchNeq,
    Leaf,
}

impl NodeMode {
    /// Parses an ONNX `nodes_modes` string.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "BRANCH_LEQ" => NodeMode::BranchLeq,
            "BRANCH_LT" => NodeMode::BranchLt,
            "BRANCH_GTE" => NodeMode::BranchGte,
            "BRANCH_GT" => NodeMode::BranchGt,
            "BRANCH_EQ" => NodeMode::BranchEq,
            "BRANCH_NEQ" => NodeMode::BranchNeq,
            "LEAF" => NodeMode::Leaf,
            other => {
                return Err(BmsError::model(format!(
                    "tree ensemble: unknown node mode `{other}`"
                )));
            }
        })
    }

    const fn code(self) -> u32 {
        match self {
            NodeMode::BranchLeq => 0,
            NodeMode::BranchLt => 1,
            NodeMode::BranchGte => 2,
            NodeMode::BranchGt => 3,
            NodeMode::BranchEq => 4,
            NodeMode::BranchNeq => 5,
            NodeMode::Leaf => 6,
        }
    }
}

/// `post_transform` of a tree ensemble.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PostTransform {
    #[default]
    None,
    Logistic,
    Softmax,
}

impl PostTransform {
    /// Parses an ONNX `post_transform` string; `PROBIT` and `SOFTMAX_ZERO` are refused.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "NONE" | "" => Ok(PostTransform::None),
            "LOGISTIC" => Ok(PostTransform::Logistic),
            "SOFTMAX" => Ok(PostTransform::Softmax),
            other => Err(BmsError::model(format!(
                "tree ensemble: post_transform `{other}` is not supported (NONE, LOGISTIC, SOFTMAX are)"
            ))),
        }
    }
}

/// `aggregate_function` of a regressor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Aggregate {
    #[default]
    Sum,
    Average,
    Min,
    Max,
}

impl Aggregate {
    /// Parses an ONNX `aggregate_function` string.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "SUM" | "" => Aggregate::Sum,
            "AVERAGE" => Aggregate::Average,
            "MIN" => Aggregate::Min,
            "MAX" => Aggregate::Max,
            other => {
                return Err(BmsError::model(format!(
                    "tree ensemble: unknown aggregate_function `{other}`"
                )));
            }
        })
    }
}

/// Class labels of a classifier (`classlabels_int64s` or `classlabels_strings`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClassLabels {
    Int64(Vec<i64>),
    Strings(Vec<String>),
}

impl ClassLabels {
    /// Number of classes.
    pub fn len(&self) -> usize {
        match self {
            ClassLabels::Int64(v) => v.len(),
            ClassLabels::Strings(v) => v.len(),
        }
    }

    /// Whether there is no class at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the ensemble computes.
#[derive(Debug, Clone, PartialEq)]
pub enum EnsembleKind {
    /// `TreeEnsembleClassifier`: a label and one score per class.
    Classifier { labels: ClassLabels },
    /// `TreeEnsembleRegressor`: `n_targets` values.
    Regressor {
        n_targets: usize,
        aggregate: Aggregate,
    },
}

/// The attributes of a tree-ensemble node, as the ONNX operator states them. The
/// `nodes_*` vectors have one entry per node, the `leaf_*` vectors (`class_*` or
/// `target_*` in ONNX) one entry per leaf weight.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EnsembleDef {
    pub nodes_treeids: Vec<i64>,
    pub nodes_nodeids: Vec<i64>,
    pub nodes_featureids: Vec<i64>,
    pub nodes_modes: Vec<NodeMode>,
    pub nodes_values: Vec<f32>,
    pub nodes_truenodeids: Vec<i64>,
    pub nodes_falsenodeids: Vec<i64>,
    /// Empty means no node tracks missing values.
    pub nodes_missing_value_tracks_true: Vec<bool>,
    pub leaf_treeids: Vec<i64>,
    pub leaf_nodeids: Vec<i64>,
    /// Class id (classifier) or target id (regressor) of each leaf weight.
    pub leaf_ids: Vec<i64>,
    pub leaf_weights: Vec<f32>,
    pub base_values: Vec<f32>,
    pub post_transform: PostTransform,
}

const FEATURE_MASK: u32 = 0x0fff_ffff;
const MISSING_TRUE_BIT: u32 = 1 << 31;
const MODE_SHIFT: u32 = 28;

/// One internal node, 16 bytes: feature index with the mode (3 bits) and the
/// missing-goes-true flag (top bit) packed above it, the threshold, and the two
/// children (`>= 0` internal node index, `< 0` leaf `!child`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
struct Node {
    packed: u32,
    threshold: f32,
    /// `[if true, if false]`.
    children: [u32; 2],
}

/// Mode parameter of [`Node::next`] that reads each node's own mode bits.
const MIXED: u32 = 7;

impl Node {
    /// The child `row` goes to. `M` is the branch mode code shared by every branch of
    /// the ensemble, or [`MIXED`]. A leaf returns its own index.
    #[inline(always)]
    fn next<const M: u32>(&self, row: &[f32]) -> u32 {
        let x = row[(self.packed & FEATURE_MASK) as usize];
        let t = self.threshold;
        let mode = if M == MIXED {
            (self.packed >> MODE_SHIFT) & 0x7
        } else {
            M
        };
        let hit = match mode {
            0 => x <= t,
            1 => x < t,
            2 => x >= t,
            3 => x > t,
            4 => x == t,
            _ => x != t,
        } | ((self.packed & MISSING_TRUE_BIT != 0) & x.is_nan());
        // An index rather than a branch: the direction is data-dependent and would
        // mispredict about half the time.
        self.children[usize::from(!hit)]
    }
}

/// How leaves feed the outputs; indexed by node index (branches add nothing).
#[derive(Debug, Clone, PartialEq)]
enum Leaves {
    /// Every leaf adds at most one weight, to output 0: `value[node]` (0 when absent).
    Single { value: Vec<f32> },
    /// Node `l` adds `weight[k]` to output `output[k]` for `k` in `offsets[l]..offsets[l+1]`.
    Multi {
        offsets: Vec<u32>,
        output: Vec<u32>,
        weight: Vec<f32>,
    },
}

/// How a classifier turns its raw sums into outputs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ClassMode {
    /// One score per class.
    PerClass,
    /// Binary classifier with a single (positive-class) score.
    BinarySingle { probability_leaves: bool },
}

/// A tree ensemble compiled for evaluation. Immutable, shareable across threads.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledEnsemble {
    kind: EnsembleKind,
    class_mode: ClassMode,
    /// Invariant: every child index is `< nodes.len()`, every feature index is
    /// `< min_width`.
    nodes: Vec<Node>,
    /// Root node index and depth (edges on the longest root-to-leaf path) per tree.
    trees: Vec<(u32, u32)>,
    /// Code of the comparison every branch uses, or [`MIXED`].
    mode: u32,
    leaves: Leaves,
    n_accumulators: usize,
    base: Vec<f32>,
    post_transform: PostTransform,
    min_width: usize,
}

/// Output of [`CompiledEnsemble::eval`].
#[derive(Debug, Clone, PartialEq)]
pub struct EnsembleOutput {
    /// Index into the class labels of each row's predicted class (classifiers only).
    pub label_index: Option<Array1<usize>>,
    /// `[N, n_classes]` class scores or `[N, n_targets]` regression values.
    pub scores: Array2<f32>,
}

fn bad(reason: impl Into<String>) -> BmsError {
    BmsError::model(format!("tree ensemble: {}", reason.into()))
}

fn check_len<T>(name: &str, v: &[T], n: usize) -> Result<()> {
    if v.len() != n {
        return Err(bad(format!(
            "attribute {name} has {} entries, expected {n}",
            v.len()
        )));
    }
    Ok(())
}

fn to_usize(name: &str, v: i64) -> Result<usize> {
    usize::try_from(v).map_err(|_| bad(format!("negative {name}: {v}")))
}

/// Rows walked together through one tree in bulk.
pub const ROW_LANES: usize = 8;
/// Trees one row walks together (rows that do not fill a [`ROW_LANES`] block).
pub const TREE_LANES: usize = 8;

impl EnsembleDef {
    /// Checks the attributes and compiles them for `kind`.
    pub fn compile(&self, kind: EnsembleKind) -> Result<CompiledEnsemble> {
        let n = self.nodes_nodeids.len();
        if n == 0 {
            return Err(bad("no nodes"));
        }
        check_len("nodes_treeids", &self.nodes_treeids, n)?;
        check_len("nodes_featureids", &self.nodes_featureids, n)?;
        check_len("nodes_modes", &self.nodes_modes, n)?;
        check_len("nodes_values", &self.nodes_values, n)?;
        check_len("nodes_truenodeids", &self.nodes_truenodeids, n)?;
        check_len("nodes_falsenodeids", &self.nodes_falsenodeids, n)?;
        if !self.nodes_missing_value_tracks_true.is_empty() {
            check_len(
                "nodes_missing_value_tracks_true",
                &self.nodes_missing_value_tracks_true,
                n,
            )?;
        }
        let nl = self.leaf_weights.len();
        check_len("leaf treeids", &self.leaf_treeids, nl)?;
        check_len("leaf nodeids", &self.leaf_nodeids, nl)?;
        check_len("leaf class/target ids", &self.leaf_ids, nl)?;

        let n_outputs = match &kind {
            EnsembleKind::Classifier { labels } => {
                if labels.len() < 2 {
                    return Err(bad(format!(
                        "a classifier needs at least 2 class labels, found {}",
                        labels.len()
                    )));
                }
                labels.len()
            }
            EnsembleKind::Regressor { n_targets, .. } => {
                if *n_targets == 0 {
                    return Err(bad("n_targets must be at least 1"));
                }
                *n_targets
            }
        };
        for &id in &self.leaf_ids {
            if to_usize("class/target id", id)? >= n_outputs {
                return Err(bad(format!(
                    "leaf targets output {id}, but there are only {n_outputs}"
                )));
            }
        }

        let mut index: HashMap<(i64, i64), usize> = HashMap::with_capacity(n);
        for i in 0..n {
            if index
                .insert((self.nodes_treeids[i], self.nodes_nodeids[i]), i)
                .is_some()
            {
                return Err(bad(format!(
                    "node {} of tree {} is defined twice",
                    self.nodes_nodeids[i], self.nodes_treeids[i]
                )));
            }
        }

        let mut weights_of: HashMap<(i64, i64), Vec<usize>> = HashMap::new();
        for k in 0..nl {
            let key = (self.leaf_treeids[k], self.leaf_nodeids[k]);
            match index.get(&key) {
                Some(&i) if self.nodes_modes[i] == NodeMode::Leaf => {}
                _ => {
                    return Err(bad(format!(
                        "a leaf weight refers to node {} of tree {}, which is not a leaf",
                        key.1, key.0
                    )));
                }
            }
            weights_of.entry(key).or_default().push(k);
        }

        let mut tree_ids: Vec<i64> = self.nodes_treeids.clone();
        tree_ids.sort_unstable();
        tree_ids.dedup();

        let mut is_child = vec![false; n];
        let child = |i: usize, id: i64, what: &str| -> Result<usize> {
            index
                .get(&(self.nodes_treeids[i], id))
                .copied()
                .ok_or_else(|| {
                    bad(format!(
                        "node {} of tree {} has {what} child {id}, which does not exist",
                        self.nodes_nodeids[i], self.nodes_treeids[i]
                    ))
                })
        };
        let mut children = vec![(0usize, 0usize); n];
        for i in 0..n {
            if self.nodes_modes[i] != NodeMode::Leaf {
                let t = child(i, self.nodes_truenodeids[i], "true")?;
                let f = child(i, self.nodes_falsenodeids[i], "false")?;
                is_child[t] = true;
                is_child[f] = true;
                children[i] = (t, f);
            }
        }
        let mut root_of: HashMap<i64, usize> = HashMap::new();
        for i in 0..n {
            if !is_child[i] && root_of.insert(self.nodes_treeids[i], i).is_some() {
                return Err(bad(format!(
                    "tree {} has more than one root",
                    self.nodes_treeids[i]
                )));
            }
        }

        let mut min_width = 0usize;
        let mut nodes: Vec<Node> = Vec::with_capacity(n);
        let mut trees: Vec<(u32, u32)> = Vec::with_capacity(tree_ids.len());
        let mut leaf_keys: Vec<Option<(i64, i64)>> = Vec::with_capacity(n);
        let mut modes_used: Vec<u32> = Vec::new();
        let mut slot = vec![None::<u32>; n];
        for tree in &tree_ids {
            let root = *root_of
                .get(tree)
                .ok_or_else(|| bad(format!("tree {tree} has no root (cycle)")))?;
            let mut stack = vec![(root, 0u32)];
            let mut pending: Vec<usize> = Vec::new();
            let mut depth = 0u32;
            while let Some((i, d)) = stack.pop() {
                if slot[i].is_some() {
                    return Err(bad(format!(
                        "node {} of tree {tree} is reached twice",
                        self.nodes_nodeids[i]
                    )));
                }
                let at = u32::try_from(nodes.len()).map_err(|_| bad("too many nodes"))?;
                slot[i] = Some(at);
                if self.nodes_modes[i] == NodeMode::Leaf {
                    depth = depth.max(d);
                    leaf_keys.push(Some((self.nodes_treeids[i], self.nodes_nodeids[i])));
                    nodes.push(Node {
                        packed: NodeMode::Leaf.code() << MODE_SHIFT,
                        threshold: 0.0,
                        children: [at, at],
                    });
                } else {
                    let feature = to_usize("feature id", self.nodes_featureids[i])?;
                    if feature as u64 > FEATURE_MASK as u64 {
                        return Err(bad(format!("feature id {feature} is too large")));
                    }
                    min_width = min_width.max(feature + 1);
                    let missing = self
                        .nodes_missing_value_tracks_true
                        .get(i)
                        .copied()
                        .unwrap_or(false);
                    let code = self.nodes_modes[i].code();
                    if !modes_used.contains(&code) {
                        modes_used.push(code);
                    }
                    leaf_keys.push(None);
                    nodes.push(Node {
                        packed: feature as u32
                            | (code << MODE_SHIFT)
                            | if missing { MISSING_TRUE_BIT } else { 0 },
                        threshold: self.nodes_values[i],
                        children: [0, 0],
                    });
                    pending.push(i);
                    stack.push((children[i].1, d + 1));
                    stack.push((children[i].0, d + 1));
                }
            }
            for i in pending {
                let Some(at) = slot[i] else { continue };
                let (t, f) = children[i];
                let node = &mut nodes[at as usize];
                node.children = [
                    slot[t].ok_or_else(|| bad("unreachable child"))?,
                    slot[f].ok_or_else(|| bad("unreachable child"))?,
                ];
            }
            trees.push((slot[root].ok_or_else(|| bad("unreachable root"))?, depth));
        }
        if let Some(i) = slot.iter().position(Option::is_none) {
            return Err(bad(format!(
                "node {} of tree {} is not reachable from its root",
                self.nodes_nodeids[i], self.nodes_treeids[i]
            )));
        }
        let mode = match modes_used.as_slice() {
            [one] => *one,
            _ => MIXED,
        };

        let mut used_ids: Vec<i64> = self.leaf_ids.clone();
        used_ids.sort_unstable();
        used_ids.dedup();
        let all_non_negative = self.leaf_weights.iter().all(|w| *w >= 0.0);

        let (class_mode, n_accumulators, base, single_score): (ClassMode, usize, Vec<f32>, bool) =
            match &kind {
                EnsembleKind::Classifier { .. } if n_outputs == 2 && used_ids.len() <= 1 => {
                    let base = match self.base_values.len() {
                        0 => 0.0,
                        1 => self.base_values[0],
                        2 => self.base_values[1],
                        k => {
                            return Err(bad(format!(
                                "base_values has {k} entries, expected 1 or 2"
                            )));
                        }
                    };
                    (
                        ClassMode::BinarySingle {
                            probability_leaves: all_non_negative && base >= 0.0,
                        },
                        1,
                        vec![base],
                        true,
                    )
                }
                _ => {
                    let base = match self.base_values.len() {
                        0 => vec![0.0; n_outputs],
                        k if k == n_outputs => self.base_values.clone(),
                        k => {
                            return Err(bad(format!(
                                "base_values has {k} entries, expected {n_outputs}"
                            )));
                        }
                    };
                    (ClassMode::PerClass, n_outputs, base, false)
                }
            };

        let weights = |key: &Option<(i64, i64)>| key.as_ref().and_then(|k| weights_of.get(k));
        let single = n_accumulators == 1
            && leaf_keys
                .iter()
                .all(|key| weights(key).is_none_or(|w| w.len() <= 1));
        let leaves = if single {
            let value = leaf_keys
                .iter()
                .map(|key| {
                    weights(key)
                        .and_then(|w| w.first())
                        .map_or(0.0, |&k| self.leaf_weights[k])
                })
                .collect();
            Leaves::Single { value }
        } else {
            let mut offsets = Vec::with_capacity(leaf_keys.len() + 1);
            let mut output = Vec::new();
            let mut weight = Vec::new();
            offsets.push(0u32);
            for key in &leaf_keys {
                if let Some(ks) = weights(key) {
                    for &k in ks {
                        let id = self.leaf_ids[k];
                        let acc = if single_score { 0 } else { id as u32 };
                        output.push(acc);
                        weight.push(self.leaf_weights[k]);
                    }
                }
                offsets
                    .push(u32::try_from(output.len()).map_err(|_| bad("too many leaf weights"))?);
            }
            Leaves::Multi {
                offsets,
                output,
                weight,
            }
        };

        Ok(CompiledEnsemble {
            kind,
            class_mode,
            nodes,
            trees,
            mode,
            leaves,
            n_accumulators,
            base,
            post_transform: self.post_transform,
            min_width,
        })
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn softmax(v: &mut [f64]) {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

impl CompiledEnsemble {
    /// What the ensemble computes.
    pub fn kind(&self) -> &EnsembleKind {
        &self.kind
    }

    /// Number of score columns: classes for a classifier, targets for a regressor.
    pub fn n_outputs(&self) -> usize {
        match &self.kind {
            EnsembleKind::Classifier { labels } => labels.len(),
            EnsembleKind::Regressor { n_targets, .. } => *n_targets,
        }
    }

    /// Number of trees.
    pub fn n_trees(&self) -> usize {
        self.trees.len()
    }

    /// The smallest input width the trees can read (highest feature id + 1).
    pub fn min_width(&self) -> usize {
        self.min_width
    }

    /// Evaluates `x` (`[N, width]`): scores for every row, and the predicted class for a
    /// classifier.
    pub fn eval(&self, x: ArrayView2<f32>) -> Result<EnsembleOutput> {
        let (n_rows, width) = x.dim();
        if width < self.min_width {
            return Err(BmsError::Shape {
                what: "tree ensemble input width (highest feature id + 1)".into(),
                expected: self.min_width,
                found: width,
            });
        }
        let x = x.as_standard_layout();
        let data = x
            .as_slice()
            .ok_or_else(|| BmsError::model("tree ensemble: input is not contiguous"))?;
        let acc = match self.mode {
            0 => self.accumulate::<0>(data, n_rows, width),
            1 => self.accumulate::<1>(data, n_rows, width),
            2 => self.accumulate::<2>(data, n_rows, width),
            3 => self.accumulate::<3>(data, n_rows, width),
            4 => self.accumulate::<4>(data, n_rows, width),
            5 => self.accumulate::<5>(data, n_rows, width),
            _ => self.accumulate::<MIXED>(data, n_rows, width),
        };
        Ok(self.finish(n_rows, acc))
    }

    /// Raw per-row sums (`n_accumulators` per row) of the `n_rows` rows in `data`
    /// (`width >= min_width` values each).
    fn accumulate<const M: u32>(&self, data: &[f32], n_rows: usize, width: usize) -> Vec<f32> {
        let nacc = self.n_accumulators;
        let mut acc = vec![0f32; n_rows * nacc];
        let aggregate = match self.kind {
            EnsembleKind::Regressor {
                aggregate: a @ (Aggregate::Min | Aggregate::Max),
                ..
            } => Some(a),
            _ => None,
        };
        let mut seen = vec![
            false;
            if aggregate.is_some() {
                n_rows * nacc
            } else {
                0
            }
        ];
        let mut sums = Sums {
            leaves: &self.leaves,
            aggregate,
            acc: &mut acc,
            seen: &mut seen,
            nacc,
        };
        let nodes = self.nodes.as_slice();
        let bulk = if width == 0 {
            0
        } else {
            n_rows - n_rows % ROW_LANES
        };
        for (b, block) in data[..bulk * width]
            .chunks_exact(ROW_LANES * width.max(1))
            .enumerate()
        {
            let rows: [&[f32]; ROW_LANES] =
                std::array::from_fn(|l| &block[l * width..(l + 1) * width]);
            for &(root, depth) in &self.trees {
                let mut cur = [root; ROW_LANES];
                walk::<M, ROW_LANES>(nodes, &rows, &mut cur, depth);
                for (l, &leaf) in cur.iter().enumerate() {
                    sums.add(b * ROW_LANES + l, leaf);
                }
            }
        }
        for r in bulk..n_rows {
            let row = &data[r * width..(r + 1) * width];
            let rows = [row; TREE_LANES];
            for group in self.trees.chunks(TREE_LANES) {
                let last = group.len() - 1;
                let mut cur: [u32; TREE_LANES] = std::array::from_fn(|l| group[l.min(last)].0);
                let depth = group.iter().map(|t| t.1).max().unwrap_or(0);
                walk::<M, TREE_LANES>(nodes, &rows, &mut cur, depth);
                for &leaf in &cur[..group.len()] {
                    sums.add(r, leaf);
                }
            }
        }
        acc
    }

    fn finish(&self, n_rows: usize, acc: Vec<f32>) -> EnsembleOutput {
        let n_out = self.n_outputs();
        let nacc = self.n_accumulators;
        let mut scores = Array2::<f32>::zeros((n_rows, n_out));
        match &self.kind {
            EnsembleKind::Regressor { aggregate, .. } => {
                let n_trees = self.trees.len().max(1) as f32;
                let mut row = vec![0f64; n_out];
                for (r, mut out) in scores.axis_iter_mut(Axis(0)).enumerate() {
                    for t in 0..n_out {
                        let v = acc[r * nacc + t];
                        let v = if *aggregate == Aggregate::Average {
                            v / n_trees
                        } else {
                            v
                        };
                        row[t] = f64::from(v + self.base[t]);
                    }
                    self.transform(&mut row);
                    for t in 0..n_out {
                        out[t] = row[t] as f32;
                    }
                }
                EnsembleOutput {
                    label_index: None,
                    scores,
                }
            }
            EnsembleKind::Classifier { .. } => {
                let mut labels = Array1::<usize>::zeros(n_rows);
                match self.class_mode {
                    ClassMode::BinarySingle { probability_leaves } => {
                        for r in 0..n_rows {
                            let s = f64::from(acc[r] + self.base[0]);
                            let (p0, p1) = match self.post_transform {
                                PostTransform::Logistic => (sigmoid(-s), sigmoid(s)),
                                _ if probability_leaves => (1.0 - s, s),
                                _ => (-s, s),
                            };
                            scores[[r, 0]] = p0 as f32;
                            scores[[r, 1]] = p1 as f32;
                            labels[r] = usize::from(p1 > p0);
                        }
                    }
                    ClassMode::PerClass => {
                        let mut row = vec![0f64; n_out];
                        for r in 0..n_rows {
                            for c in 0..n_out {
                                row[c] = f64::from(acc[r * nacc + c] + self.base[c]);
                            }
                            labels[r] = argmax(&row);
                            self.transform(&mut row);
                            for c in 0..n_out {
                                scores[[r, c]] = row[c] as f32;
                            }
                        }
                    }
                }
                EnsembleOutput {
                    label_index: Some(labels),
                    scores,
                }
            }
        }
    }

    fn transform(&self, row: &mut [f64]) {
        match self.post_transform {
            PostTransform::None => {}
            PostTransform::Logistic => row.iter_mut().for_each(|x| *x = sigmoid(*x)),
            PostTransform::Softmax => softmax(row),
        }
    }
}

/// Moves each lane `l` `depth` steps from node `cur[l]` along `rows[l]`; a lane that
/// reaches a leaf stays on it.
#[inline(always)]
fn walk<const M: u32, const L: usize>(
    nodes: &[Node],
    rows: &[&[f32]; L],
    cur: &mut [u32; L],
    depth: u32,
) {
    for _ in 0..depth {
        for (c, row) in cur.iter_mut().zip(rows) {
            *c = nodes[*c as usize].next::<M>(row);
        }
    }
}

/// Per-row accumulators that leaves are added to.
struct Sums<'a> {
    leaves: &'a Leaves,
    /// `Some` for a `MIN` / `MAX` regressor, whose `seen` flags mark filled accumulators.
    aggregate: Option<Aggregate>,
    acc: &'a mut [f32],
    seen: &'a mut [bool],
    nacc: usize,
}

impl Sums<'_> {
    /// Adds the weights of leaf node `leaf` to row `r`.
    #[inline(always)]
    fn add(&mut self, r: usize, leaf: u32) {
        let leaf = leaf as usize;
        let row = &mut self.acc[r * self.nacc..(r + 1) * self.nacc];
        match (self.leaves, self.aggregate) {
            (Leaves::Single { value }, None) => row[0] += value[leaf],
            (Leaves::Single { value }, Some(a)) => {
                combine(a, &mut row[0], &mut self.seen[r * self.nacc], value[leaf]);
            }
            (
                Leaves::Multi {
                    offsets,
                    output,
                    weight,
                },
                a,
            ) => {
                for k in offsets[leaf] as usize..offsets[leaf + 1] as usize {
                    let o = output[k] as usize;
                    match a {
                        None => row[o] += weight[k],
                        Some(a) => {
                            combine(a, &mut row[o], &mut self.seen[r * self.nacc + o], weight[k]);
                        }
                    }
                }
            }
        }
    }
}

fn combine(aggregate: Aggregate, acc: &mut f32, seen: &mut bool, v: f32) {
    match aggregate {
        Aggregate::Min if *seen => *acc = acc.min(v),
        Aggregate::Max if *seen => *acc = acc.max(v),
        Aggregate::Min | Aggregate::Max => *acc = v,
        Aggregate::Sum | Aggregate::Average => *acc += v,
    }
    *seen = true;
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// One stump per entry of `modes`: tree `t` tests feature 0 against `threshold`
    /// with `modes[t]`; its true leaf (node 1) weighs `1`, its false leaf (node 2) `0`.
    /// Tree ids are `10 * t` and node ids are listed out of order on purpose.
    fn stumps(modes: &[NodeMode], threshold: f32, missing: &[bool]) -> EnsembleDef {
        let mut d = EnsembleDef::default();
        for (t, &mode) in modes.iter().enumerate() {
            let tree = 10 * t as i64;
            for (node, m, value) in [
                (2, NodeMode::Leaf, 0.0),
                (0, mode, threshold),
                (1, NodeMode::Leaf, 0.0),
            ] {
                d.nodes_treeids.push(tree);
                d.nodes_nodeids.push(node);
                d.nodes_featureids.push(0);
                d.nodes_modes.push(m);
                d.nodes_values.push(value);
                d.nodes_truenodeids.push(if node == 0 { 1 } else { 0 });
                d.nodes_falsenodeids.push(if node == 0 { 2 } else { 0 });
            }
            d.nodes_missing_value_tracks_true.extend([
                false,
                missing.get(t).copied().unwrap_or(false),
                false,
            ]);
            for (node, w) in [(1, 1.0), (2, 0.0)] {
                d.leaf_treeids.push(tree);
                d.leaf_nodeids.push(node);
                d.leaf_ids.push(0);
                d.leaf_weights.push(w);
            }
        }
        d
    }

    fn regressor() -> EnsembleKind {
        EnsembleKind::Regressor {
            n_targets: 1,
            aggregate: Aggregate::Sum,
        }
    }

    fn binary() -> EnsembleKind {
        EnsembleKind::Classifier {
            labels: ClassLabels::Int64(vec![0, 1]),
        }
    }

    fn column(out: &EnsembleOutput, c: usize) -> Vec<f32> {
        out.scores.column(c).to_vec()
    }

    #[test]
    fn every_branch_mode_against_threshold_one() {
        let cases = [
            (NodeMode::BranchLeq, [1.0, 1.0, 0.0, 0.0]),
            (NodeMode::BranchLt, [1.0, 0.0, 0.0, 0.0]),
            (NodeMode::BranchGte, [0.0, 1.0, 1.0, 0.0]),
            (NodeMode::BranchGt, [0.0, 0.0, 1.0, 0.0]),
            (NodeMode::BranchEq, [0.0, 1.0, 0.0, 0.0]),
            (NodeMode::BranchNeq, [1.0, 0.0, 1.0, 1.0]),
        ];
        let x = array![[0.5f32], [1.0], [2.0], [f32::NAN]];
        for (mode, want) in cases {
            let e = stumps(&[mode], 1.0, &[]).compile(regressor()).unwrap();
            let out = e.eval(x.view()).unwrap();
            assert_eq!(column(&out, 0), want, "{mode:?}");
            assert!(out.label_index.is_none());
        }
    }

    #[test]
    fn missing_value_tracks_true_sends_nan_to_the_true_child() {
        let modes = [NodeMode::BranchLeq, NodeMode::BranchGt, NodeMode::BranchLeq];
        let e = stumps(&modes, 1.0, &[true, true, false])
            .compile(regressor())
            .unwrap();
        let out = e.eval(array![[f32::NAN], [0.0], [5.0]].view()).unwrap();
        assert_eq!(column(&out, 0), [2.0, 2.0, 1.0]);
    }

    #[test]
    fn sums_averages_min_max_and_base_values() {
        let mut d = stumps(&[NodeMode::BranchLeq, NodeMode::BranchGt], 1.0, &[]);
        d.leaf_weights = vec![3.0, -1.0, 5.0, 2.0];
        d.base_values = vec![0.5];
        let x = array![[0.0f32], [2.0]];
        let want = [
            (Aggregate::Sum, [3.0 + 2.0 + 0.5, -1.0 + 5.0 + 0.5]),
            (Aggregate::Average, [2.5 + 0.5, 2.0 + 0.5]),
            (Aggregate::Min, [2.0 + 0.5, -1.0 + 0.5]),
            (Aggregate::Max, [3.0 + 0.5, 5.0 + 0.5]),
        ];
        for (aggregate, want) in want {
            let e = d
                .compile(EnsembleKind::Regressor {
                    n_targets: 1,
                    aggregate,
                })
                .unwrap();
            assert_eq!(column(&e.eval(x.view()).unwrap(), 0), want, "{aggregate:?}");
        }
    }

    #[test]
    fn binary_single_score_logistic_with_one_or_two_base_values() {
        let mut d = stumps(&[NodeMode::BranchLeq], 0.0, &[]);
        d.leaf_weights = vec![-2.0, 1.0];
        d.post_transform = PostTransform::Logistic;
        let x = array![[-1.0f32], [1.0]];
        for base in [vec![0.25], vec![9.0, 0.25]] {
            d.base_values = base.clone();
            let e = d.compile(binary()).unwrap();
            let out = e.eval(x.view()).unwrap();
            let s = [-2.0f64 + 0.25, 1.0 + 0.25];
            for r in 0..2 {
                let p = 1.0 / (1.0 + (-s[r]).exp());
                assert!((out.scores[[r, 1]] as f64 - p).abs() < 1e-7, "{base:?}");
                assert!((out.scores[[r, 0]] as f64 - (1.0 - p)).abs() < 1e-7);
            }
            assert_eq!(out.label_index.unwrap().to_vec(), [0, 1]);
        }
    }

    #[test]
    fn binary_single_score_without_transform() {
        let mut d = stumps(&[NodeMode::BranchLeq], 0.0, &[]);
        d.leaf_weights = vec![0.25, 0.75];
        let e = d.compile(binary()).unwrap();
        let out = e.eval(array![[-1.0f32], [1.0]].view()).unwrap();
        assert_eq!(out.scores, array![[0.75f32, 0.25], [0.25, 0.75]]);
        assert_eq!(out.label_index.unwrap().to_vec(), [0, 1]);

        d.leaf_weights = vec![-0.5, 0.5];
        let e = d.compile(binary()).unwrap();
        let out = e.eval(array![[-1.0f32], [1.0]].view()).unwrap();
        assert_eq!(out.scores, array![[0.5f32, -0.5], [-0.5, 0.5]]);
        assert_eq!(out.label_index.unwrap().to_vec(), [0, 1]);
    }

    #[test]
    fn per_class_weights_softmax_and_string_labels() {
        let mut d = stumps(&[NodeMode::BranchLeq], 0.0, &[]);
        d.leaf_treeids = vec![0, 0, 0, 0, 0, 0];
        d.leaf_nodeids = vec![1, 1, 1, 2, 2, 2];
        d.leaf_ids = vec![0, 1, 2, 0, 1, 2];
        d.leaf_weights = vec![1.0, 2.0, 3.0, 3.0, 0.0, 0.0];
        d.base_values = vec![0.0, 0.0, 1.0];
        d.post_transform = PostTransform::Softmax;
        let labels = ClassLabels::Strings(vec!["a".into(), "b".into(), "c".into()]);
        let e = d
            .compile(EnsembleKind::Classifier {
                labels: labels.clone(),
            })
            .unwrap();
        let out = e.eval(array![[-1.0f32], [1.0]].view()).unwrap();
        let softmax = |v: [f64; 3]| {
            let z: f64 = v.iter().map(|x| x.exp()).sum();
            v.map(|x| (x.exp() / z) as f32)
        };
        let want = [softmax([1.0, 2.0, 4.0]), softmax([3.0, 0.0, 1.0])];
        for r in 0..2 {
            for c in 0..3 {
                assert!((out.scores[[r, c]] - want[r][c]).abs() < 1e-7);
            }
        }
        assert_eq!(out.label_index.unwrap().to_vec(), [2, 0]);
    }

    #[test]
    fn per_class_logistic_and_none() {
        let mut d = stumps(&[NodeMode::BranchLeq], 0.0, &[]);
        d.leaf_treeids = vec![0, 0, 0, 0];
        d.leaf_nodeids = vec![1, 1, 2, 2];
        d.leaf_ids = vec![0, 1, 0, 1];
        d.leaf_weights = vec![0.8, 0.2, 0.1, 0.9];
        let e = d.compile(binary()).unwrap();
        let out = e.eval(array![[-1.0f32], [1.0]].view()).unwrap();
        assert_eq!(out.scores, array![[0.8f32, 0.2], [0.1, 0.9]]);
        assert_eq!(out.label_index.unwrap().to_vec(), [0, 1]);

        d.post_transform = PostTransform::Logistic;
        let e = d.compile(binary()).unwrap();
        let out = e.eval(array![[-1.0f32]].view()).unwrap();
        let sig = |x: f64| (1.0 / (1.0 + (-x).exp())) as f32;
        assert_eq!(out.scores, array![[sig(0.8f32 as f64), sig(0.2f32 as f64)]]);
    }

    #[test]
    fn deeper_tree_many_rows_equals_row_by_row() {
        // x0 <= 0 ? (x1 < 1 ? 1 : 2) : (x2 >= 0.5 ? 3 : 4); node ids scrambled.
        let d = EnsembleDef {
            nodes_treeids: vec![0; 7],
            nodes_nodeids: vec![5, 0, 3, 1, 2, 6, 4],
            nodes_featureids: vec![0, 0, 1, 0, 2, 0, 0],
            nodes_modes: vec![
                NodeMode::Leaf,
                NodeMode::BranchLeq,
                NodeMode::BranchLt,
                NodeMode::Leaf,
                NodeMode::BranchGte,
                NodeMode::Leaf,
                NodeMode::Leaf,
            ],
            nodes_values: vec![0.0, 0.0, 1.0, 0.0, 0.5, 0.0, 0.0],
            nodes_truenodeids: vec![0, 3, 1, 0, 5, 0, 0],
            nodes_falsenodeids: vec![0, 2, 4, 0, 6, 0, 0],
            leaf_treeids: vec![0; 4],
            leaf_nodeids: vec![1, 4, 5, 6],
            leaf_ids: vec![0; 4],
            leaf_weights: vec![1.0, 2.0, 3.0, 4.0],
            ..Default::default()
        };
        let e = d.compile(regressor()).unwrap();
        let expect = |x: [f32; 3]| -> f32 {
            if x[0] <= 0.0 {
                if x[1] < 1.0 { 1.0 } else { 2.0 }
            } else if x[2] >= 0.5 {
                3.0
            } else {
                4.0
            }
        };
        let rows: Vec<[f32; 3]> = (0..37)
            .map(|i| {
                let f = i as f32;
                [(f * 0.37).sin(), (f * 0.11).cos() * 2.0, (f * 0.7).sin()]
            })
            .collect();
        let x = Array2::from_shape_fn((rows.len(), 3), |(r, c)| rows[r][c]);
        let out = e.eval(x.view()).unwrap();
        for (r, row) in rows.iter().enumerate() {
            assert_eq!(out.scores[[r, 0]], expect(*row), "row {r}");
        }
        assert_eq!(e.min_width(), 3);
        assert!(e.eval(Array2::<f32>::zeros((1, 2)).view()).is_err());
    }

    /// xorshift64: deterministic test data without an RNG crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32
        }
    }

    /// `n_trees` irregular trees (depth 0 to 6) over 7 features; every branch uses
    /// `mode` when given, a random mode otherwise; random missing-value flags; tree ids
    /// listed in descending order.
    fn random_ensemble(rng: &mut Rng, n_trees: usize, mode: Option<NodeMode>) -> EnsembleDef {
        const MODES: [NodeMode; 6] = [
            NodeMode::BranchLeq,
            NodeMode::BranchLt,
            NodeMode::BranchGte,
            NodeMode::BranchGt,
            NodeMode::BranchEq,
            NodeMode::BranchNeq,
        ];
        let mut d = EnsembleDef::default();
        for t in (0..n_trees as i64).rev() {
            let mut next_id = 1i64;
            let mut open = vec![(0i64, 0u32)];
            while let Some((id, depth)) = open.pop() {
                d.nodes_treeids.push(t);
                d.nodes_nodeids.push(id);
                d.nodes_featureids.push(rng.below(7) as i64);
                d.nodes_values.push((rng.below(5) as f32 - 2.0) * 0.5);
                d.nodes_missing_value_tracks_true.push(rng.below(2) == 1);
                if depth < 6 && rng.below(4) != 0 {
                    let m = mode.unwrap_or(MODES[rng.below(6) as usize]);
                    d.nodes_modes.push(m);
                    d.nodes_truenodeids.push(next_id);
                    d.nodes_falsenodeids.push(next_id + 1);
                    open.push((next_id, depth + 1));
                    open.push((next_id + 1, depth + 1));
                    next_id += 2;
                } else {
                    d.nodes_modes.push(NodeMode::Leaf);
                    d.nodes_truenodeids.push(0);
                    d.nodes_falsenodeids.push(0);
                    d.leaf_treeids.push(t);
                    d.leaf_nodeids.push(id);
                    d.leaf_ids.push(0);
                    d.leaf_weights.push(rng.unit() - 0.5);
                }
            }
        }
        d
    }

    /// The sum over trees (ascending tree id) of the leaf weight `row` reaches, walking
    /// the attributes as stated.
    fn reference_sum(d: &EnsembleDef, row: &[f32]) -> f32 {
        let at = |t: i64, id: i64| {
            (0..d.nodes_nodeids.len())
                .find(|&i| d.nodes_treeids[i] == t && d.nodes_nodeids[i] == id)
                .unwrap()
        };
        let mut trees = d.nodes_treeids.clone();
        trees.sort_unstable();
        trees.dedup();
        let mut sum = 0f32;
        for t in trees {
            let mut i = at(t, 0);
            while d.nodes_modes[i] != NodeMode::Leaf {
                let x = row[d.nodes_featureids[i] as usize];
                let v = d.nodes_values[i];
                let hit = match d.nodes_modes[i] {
                    NodeMode::BranchLeq => x <= v,
                    NodeMode::BranchLt => x < v,
                    NodeMode::BranchGte => x >= v,
                    NodeMode::BranchGt => x > v,
                    NodeMode::BranchEq => x == v,
                    NodeMode::BranchNeq => x != v,
                    NodeMode::Leaf => unreachable!(),
                } || (x.is_nan() && d.nodes_missing_value_tracks_true[i]);
                let next = if hit {
                    d.nodes_truenodeids[i]
                } else {
                    d.nodes_falsenodeids[i]
                };
                i = at(t, next);
            }
            let k = (0..d.leaf_weights.len())
                .find(|&k| d.leaf_treeids[k] == t && d.leaf_nodeids[k] == d.nodes_nodeids[i])
                .unwrap();
            sum += d.leaf_weights[k];
        }
        sum
    }

    #[test]
    fn bulk_and_single_row_walks_equal_a_plain_walk_of_the_attributes() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for (n_trees, mode) in [
            (37, Some(NodeMode::BranchLt)),
            (37, Some(NodeMode::BranchGte)),
            (19, None),
            (3, None),
        ] {
            let d = random_ensemble(&mut rng, n_trees, mode);
            let e = d.compile(regressor()).unwrap();
            assert_eq!(e.mode == MIXED, mode.is_none(), "{mode:?}");
            let n_rows = 3 * ROW_LANES + 5;
            let x = Array2::from_shape_fn((n_rows, 7), |_| match rng.below(8) {
                0 => f32::NAN,
                k => (k as f32 - 4.0) * 0.5,
            });
            let bulk = e.eval(x.view()).unwrap();
            for r in 0..n_rows {
                let want = reference_sum(&d, x.row(r).as_slice().unwrap());
                assert_eq!(bulk.scores[[r, 0]], want, "{mode:?}: row {r} in bulk");
                let one = e.eval(x.slice(ndarray::s![r..r + 1, ..])).unwrap();
                assert_eq!(one.scores[[0, 0]], want, "{mode:?}: row {r} alone");
            }
        }
    }

    #[test]
    fn a_single_leaf_tree_and_an_empty_batch() {
        let d = EnsembleDef {
            nodes_treeids: vec![0],
            nodes_nodeids: vec![0],
            nodes_featureids: vec![0],
            nodes_modes: vec![NodeMode::Leaf],
            nodes_values: vec![0.0],
            nodes_truenodeids: vec![0],
            nodes_falsenodeids: vec![0],
            leaf_treeids: vec![0],
            leaf_nodeids: vec![0],
            leaf_ids: vec![0],
            leaf_weights: vec![7.0],
            ..Default::default()
        };
        let e = d.compile(regressor()).unwrap();
        assert_eq!(column(&e.eval(array![[1.0f32]].view()).unwrap(), 0), [7.0]);
        assert_eq!(
            e.eval(Array2::zeros((0, 1)).view()).unwrap().scores.nrows(),
            0
        );
    }

    #[test]
    fn malformed_ensembles_are_refused() {
        let good = stumps(&[NodeMode::BranchLeq], 0.0, &[]);

        let mut d = good.clone();
        d.nodes_truenodeids[1] = 9;
        assert!(d.compile(regressor()).is_err(), "dangling child");

        let mut d = good.clone();
        d.nodes_values.pop();
        assert!(d.compile(regressor()).is_err(), "short attribute");

        let mut d = good.clone();
        d.leaf_nodeids[0] = 0;
        assert!(d.compile(regressor()).is_err(), "weight on a branch");

        let mut d = good.clone();
        d.leaf_ids[0] = 3;
        assert!(d.compile(binary()).is_err(), "class id out of range");

        let mut d = good.clone();
        d.nodes_truenodeids[1] = 0;
        assert!(d.compile(regressor()).is_err(), "cycle");

        let mut d = good.clone();
        d.base_values = vec![0.0; 3];
        assert!(d.compile(binary()).is_err(), "three base values");

        let mut d = good.clone();
        d.nodes_featureids[1] = -1;
        assert!(d.compile(regressor()).is_err(), "negative feature");

        assert!(
            good.compile(EnsembleKind::Classifier {
                labels: ClassLabels::Int64(vec![1])
            })
            .is_err()
        );
        assert!(NodeMode::parse("BRANCH_XX").is_err());
        assert!(PostTransform::parse("PROBIT").is_err());
        assert!(Aggregate::parse("MEDIAN").is_err());
    }
}
