//! Grouping tensors by transformer block: the unit an inference engine
//! decodes in one launch, into one reusable buffer.
//!
//! # The rule
//!
//! A tensor belongs to a block when a dot-separated component of its name is
//! a decimal number `N` that follows one of the usual names of a stack of
//! blocks ([`STACK_NAMES`]: `layers`, `layer`, `h`, `blocks`, `block`,
//! `transformer_blocks`) and is not the last component. The first such
//! component decides, so `model.layers.3.mlp.experts.7.w1` is in block 3.
//! The block's key is the name up to the stack name (its *stack*, e.g.
//! `model.layers`, `transformer.h`, `model.decoder.layers`,
//! `encoder.layer`) and `N`; one model can hold several stacks (an encoder
//! and a decoder, a vision tower), whose blocks are kept apart.
//!
//! This covers `model.layers.N.` (Llama, Mistral, Qwen, Gemma),
//! `model.decoder.layers.N.` (OPT, Whisper), `transformer.h.N.` (GPT-2,
//! Falcon, Bloom), `transformer.blocks.N.` (MPT), `gpt_neox.layers.N.`,
//! `encoder.layer.N.` (BERT), `model.language_model.layers.N.`, and bare
//! `layers.N.` / `blocks.N.` / `h.N.`. Every other tensor (embeddings, final
//! norm, head) goes to one *rest* group.
//!
//! # Order
//!
//! Blocks are ordered by stack name, then by `N` numerically (2 before 10);
//! tensors inside a group by name, so that every block of a stack lays its
//! tensors out in the same order and at the same offsets when their shapes
//! agree.

/// Names of a stack of blocks: the component before a block number.
pub const STACK_NAMES: [&str; 6] = ["layers", "layer", "h", "blocks", "block", "transformer_blocks"];

/// A transformer block: its stack and number.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Block {
    /// The name up to and including the stack name, e.g. `model.layers`.
    pub stack: String,
    /// The block number.
    pub index: u64,
}

/// The block a tensor name belongs to, by the rule in the module docs.
pub fn block_of(name: &str) -> Option<Block> {
    let parts: Vec<&str> = name.split('.').collect();
    for i in 1..parts.len().saturating_sub(1) {
        let p = parts[i];
        if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && STACK_NAMES.contains(&parts[i - 1]) {
            let Ok(index) = p.parse() else { continue };
            return Some(Block { stack: parts[..i].join("."), index });
        }
    }
    None
}

/// One tensor of a group and where it goes in the group's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMember {
    /// Tensor name.
    pub name: String,
    /// Byte offset in the decoded group.
    pub offset: u64,
    /// Elements.
    pub elements: u64,
    /// Decoded bytes.
    pub bytes: u64,
}

/// Tensors decoded together, back to back in one buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TensorGroup {
    /// The block, or `None` for the rest group (or a group of named tensors).
    pub block: Option<Block>,
    /// The tensors, in buffer order.
    pub members: Vec<GroupMember>,
    /// Decoded bytes of the whole group.
    pub bytes: u64,
    /// Elements of the whole group.
    pub elements: u64,
}

impl TensorGroup {
    /// A group of `(name, elements, bytes)`, laid out in the order given.
    pub(crate) fn from_members(block: Option<Block>, members: Vec<(String, u64, u64)>) -> Self {
        let mut g = TensorGroup { block, ..Default::default() };
        for (name, elements, bytes) in members {
            g.members.push(GroupMember { name, offset: g.bytes, elements, bytes });
            // Saturating: an absurd shape must give an unallocatable size, not a panic.
            g.bytes = g.bytes.saturating_add(bytes);
            g.elements = g.elements.saturating_add(elements);
        }
        g
    }

    /// The member named `name`.
    pub fn member(&self, name: &str) -> Option<&GroupMember> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// A checkpoint's tensors grouped by block: one group per block, plus the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockGroups {
    /// One group per block, by stack name then block number.
    pub blocks: Vec<TensorGroup>,
    /// Every tensor in no block (possibly empty).
    pub rest: TensorGroup,
}

impl BlockGroups {
    /// Groups `(name, elements, decoded bytes)` triples by the rule in the module docs.
    pub fn new<'a>(tensors: impl IntoIterator<Item = (&'a str, u64, u64)>) -> Self {
        let mut blocks: std::collections::BTreeMap<Block, Vec<(String, u64, u64)>> = Default::default();
        let mut rest = Vec::new();
        for (name, elements, bytes) in tensors {
            let t = (name.to_string(), elements, bytes);
            match block_of(name) {
                Some(b) => blocks.entry(b).or_default().push(t),
                None => rest.push(t),
            }
        }
        let sorted = |mut v: Vec<(String, u64, u64)>| {
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        BlockGroups {
            blocks: blocks.into_iter().map(|(b, v)| TensorGroup::from_members(Some(b), sorted(v))).collect(),
            rest: TensorGroup::from_members(None, sorted(rest)),
        }
    }

    /// The largest block's decoded bytes: the size of one buffer that can
    /// take any block (0 without blocks).
    pub fn max_block_bytes(&self) -> u64 {
        self.blocks.iter().map(|g| g.bytes).max().unwrap_or(0)
    }

    /// The largest block's element count (0 without blocks).
    pub fn max_block_elements(&self) -> u64 {
        self.blocks.iter().map(|g| g.elements).max().unwrap_or(0)
    }

    /// Every group: the blocks in order, then the rest group if it is not empty.
    pub fn iter(&self) -> impl Iterator<Item = &TensorGroup> {
        self.blocks.iter().chain((!self.rest.members.is_empty()).then_some(&self.rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(stack: &str, index: u64) -> Option<Block> {
        Some(Block { stack: stack.into(), index })
    }

    #[test]
    fn block_names_of_several_families() {
        assert_eq!(block_of("model.layers.12.self_attn.q_proj.weight"), b("model.layers", 12));
        assert_eq!(block_of("model.decoder.layers.0.fc1.weight"), b("model.decoder.layers", 0));
        assert_eq!(block_of("transformer.h.7.attn.c_attn.weight"), b("transformer.h", 7));
        assert_eq!(block_of("transformer.blocks.3.ffn.up_proj.weight"), b("transformer.blocks", 3));
        assert_eq!(block_of("gpt_neox.layers.5.mlp.dense_h_to_4h.weight"), b("gpt_neox.layers", 5));
        assert_eq!(block_of("encoder.layer.11.output.dense.weight"), b("encoder.layer", 11));
        assert_eq!(block_of("model.language_model.layers.2.mlp.up_proj.weight"), b("model.language_model.layers", 2));
        assert_eq!(block_of("layers.4.attention.wq.weight"), b("layers", 4));
        assert_eq!(block_of("blocks.9.att.key.weight"), b("blocks", 9));
        assert_eq!(block_of("model.layers.3.mlp.experts.7.w1.weight"), b("model.layers", 3));
        for rest in [
            "model.embed_tokens.weight",
            "model.norm.weight",
            "lm_head.weight",
            "model.layers.5",
            "model.layers.x.weight",
            "model.experts.3.weight",
            "model.layers.99999999999999999999999.w",
        ] {
            assert_eq!(block_of(rest), None, "{rest}");
        }
    }

    #[test]
    fn groups_are_ordered_numerically_with_a_rest_group_and_sizes() {
        let names = [
            ("model.layers.10.mlp.up.weight", 6, 12),
            ("model.embed_tokens.weight", 100, 200),
            ("model.layers.2.mlp.up.weight", 6, 12),
            ("model.layers.2.input_norm.weight", 4, 16),
            ("model.layers.10.input_norm.weight", 4, 16),
            ("model.layers.2.mlp.down.weight", 10, 20),
            ("lm_head.weight", 100, 200),
        ];
        let g = BlockGroups::new(names.iter().map(|&(n, e, b)| (n, e, b)));
        let indices: Vec<u64> = g.blocks.iter().map(|b| b.block.as_ref().unwrap().index).collect();
        assert_eq!(indices, [2, 10]);
        let b2: Vec<&str> = g.blocks[0].members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            b2,
            ["model.layers.2.input_norm.weight", "model.layers.2.mlp.down.weight", "model.layers.2.mlp.up.weight"]
        );
        let offsets: Vec<u64> = g.blocks[0].members.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, [0, 16, 36]);
        assert_eq!((g.blocks[0].bytes, g.blocks[0].elements), (48, 20));
        assert_eq!((g.blocks[1].bytes, g.blocks[1].elements), (28, 10));
        assert_eq!((g.max_block_bytes(), g.max_block_elements()), (48, 20));
        let rest: Vec<&str> = g.rest.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(rest, ["lm_head.weight", "model.embed_tokens.weight"]);
        assert_eq!(g.rest.bytes, 400);
        assert_eq!(g.iter().count(), 3);
    }

    #[test]
    fn stacks_are_kept_apart() {
        let names = ["model.encoder.layers.1.w", "model.decoder.layers.1.w", "model.decoder.layers.0.w"];
        let g = BlockGroups::new(names.iter().map(|&n| (n, 1, 2)));
        let keys: Vec<(String, u64)> =
            g.blocks.iter().map(|b| b.block.clone().map(|b| (b.stack, b.index)).unwrap()).collect();
        assert_eq!(
            keys,
            [
                ("model.decoder.layers".into(), 0),
                ("model.decoder.layers".into(), 1),
                ("model.encoder.layers".into(), 1)
            ]
        );
        assert!(g.rest.members.is_empty());
        assert_eq!(g.iter().count(), 3);
    }
}
