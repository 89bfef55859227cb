//! SentencePiece's precompiled character map: the normalisation rules (an NFKC variant with
//! SentencePiece's own additions) stored as a double-array trie over UTF-8 byte sequences plus
//! a block of NUL-terminated replacement strings.
//!
//! Blob layout: trie size in bytes (`u32`, little-endian), the trie's 32-bit units, then the
//! replacement strings. A trie unit packs a label byte (bits 0-7, bit 31 marks a value unit),
//! a has-leaf flag (bit 8) and the XOR offset to its children (bits 10-31, scaled by 256 when
//! bit 9 is set); a value unit's low 31 bits index the replacement strings.

/// Decoded precompiled character map.
#[derive(Debug, Clone)]
pub struct PrecompiledCharsMap {
    units: Vec<u32>,
    replacements: Vec<u8>,
}

fn unit_has_leaf(unit: u32) -> bool {
    (unit >> 8) & 1 == 1
}

fn unit_value(unit: u32) -> u32 {
    unit & 0x7fff_ffff
}

fn unit_label(unit: u32) -> u32 {
    unit & (0x8000_0000 | 0xff)
}

fn unit_offset(unit: u32) -> usize {
    ((unit >> 10) << ((unit & (1 << 9)) >> 6)) as usize
}

impl PrecompiledCharsMap {
    /// Parses the raw (already base64-decoded) blob. Every replacement string must be UTF-8.
    pub fn parse(blob: &[u8]) -> Result<Self, String> {
        if blob.len() < 4 {
            return Err(format!("precompiled map has {} bytes", blob.len()));
        }
        let trie_size = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
        if !trie_size.is_multiple_of(4) || trie_size == 0 || 4 + trie_size > blob.len() {
            return Err(format!(
                "precompiled map declares a {trie_size}-byte trie in a {}-byte blob",
                blob.len()
            ));
        }
        let units = blob[4..4 + trie_size]
            .chunks_exact(4)
            .map(|chunk| u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect();
        let replacements = blob[4 + trie_size..].to_vec();
        for piece in replacements.split(|byte| *byte == 0) {
            if std::str::from_utf8(piece).is_err() {
                return Err("precompiled map holds a replacement that is not UTF-8".to_string());
            }
        }
        Ok(Self {
            units,
            replacements,
        })
    }

    /// The longest rule matching a prefix of `key`: (bytes consumed, replacement text).
    pub fn longest_match<'a>(&'a self, key: &[u8]) -> Option<(usize, &'a str)> {
        let mut node = unit_offset(*self.units.first()?);
        let mut found = None;
        for (index, &byte) in key.iter().enumerate() {
            node ^= byte as usize;
            let Some(&unit) = self.units.get(node) else {
                break;
            };
            if unit_label(unit) != byte as u32 {
                break;
            }
            node ^= unit_offset(unit);
            if unit_has_leaf(unit) {
                if let Some(value_unit) = self.units.get(node) {
                    found = Some((index + 1, unit_value(*value_unit) as usize));
                }
            }
        }
        let (length, start) = found?;
        let tail = self.replacements.get(start..)?;
        let end = tail
            .iter()
            .position(|byte| *byte == 0)
            .unwrap_or(tail.len());
        // Validated as UTF-8 at parse time (each NUL-separated string); a start inside a
        // string still yields a suffix, which is checked here rather than trusted.
        let text = std::str::from_utf8(&tail[..end]).ok()?;
        Some((length, text))
    }

    /// Normalises `text` the way SentencePiece does: at each position the longest matching
    /// rule is replaced, otherwise one character is copied unchanged.
    pub fn normalize(&self, text: &str, out: &mut String) {
        let bytes = text.as_bytes();
        let mut position = 0;
        while position < bytes.len() {
            // A rule must end on a character boundary (always true for a well-formed map).
            if let Some((length, replacement)) = self
                .longest_match(&bytes[position..])
                .filter(|(length, _)| text.is_char_boundary(position + length))
            {
                out.push_str(replacement);
                position += length;
                continue;
            }
            let character = text[position..].chars().next().unwrap_or('\u{fffd}');
            out.push(character);
            position += character.len_utf8().max(1);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a double-array blob for a handful of (key, replacement) rules, using the same
    /// unit encoding as SentencePiece's compiler (a small greedy builder, enough for tests).
    pub(crate) fn build_blob(rules: &[(&str, &str)]) -> Vec<u8> {
        use std::collections::BTreeMap;
        // Replacement strings.
        let mut replacements = Vec::new();
        let mut value_of = Vec::new();
        for (_, replacement) in rules {
            value_of.push(replacements.len() as u32);
            replacements.extend_from_slice(replacement.as_bytes());
            replacements.push(0);
        }
        // Trie of keys: node -> children by byte; terminal value.
        #[derive(Default)]
        struct Node {
            children: BTreeMap<u8, usize>,
            value: Option<u32>,
        }
        let mut nodes = vec![Node::default()];
        for ((key, _), value) in rules.iter().zip(&value_of) {
            let mut current = 0;
            for &byte in key.as_bytes() {
                let next = match nodes[current].children.get(&byte) {
                    Some(next) => *next,
                    None => {
                        nodes.push(Node::default());
                        let id = nodes.len() - 1;
                        nodes[current].children.insert(byte, id);
                        id
                    }
                };
                current = next;
            }
            nodes[current].value = Some(*value);
        }
        // Place nodes: unit[position of node] holds label + offset to its children block.
        let mut units = vec![0u32; 1 << 16];
        let mut used = vec![false; 1 << 16];
        used[0] = true;
        // Bases must be unique: two nodes sharing a base would accept each other's labels.
        let mut used_bases = std::collections::HashSet::new();
        let mut stack = vec![(0usize, 0usize)]; // (node, unit position)
        while let Some((node, position)) = stack.pop() {
            // Children labels: value leaf uses label 0 (the terminator).
            let mut labels: Vec<(u8, Option<usize>)> = Vec::new();
            if nodes[node].value.is_some() {
                labels.push((0, None));
            }
            for (byte, child) in &nodes[node].children {
                labels.push((*byte, Some(*child)));
            }
            if labels.is_empty() {
                continue;
            }
            // Find a base offset (multiple of 256 keeps `offset` encodable in this builder)
            // such that base ^ label is free for every label and base != position.
            let mut base = 256usize;
            loop {
                if base != position
                    && !used_bases.contains(&base)
                    && labels
                        .iter()
                        .all(|(label, _)| !used[base ^ *label as usize])
                {
                    break;
                }
                base += 256;
            }
            used_bases.insert(base);
            let offset = base ^ position;
            assert!(offset < (1 << 21), "test trie too large");
            let has_leaf = nodes[node].value.is_some();
            units[position] |= ((offset as u32) << 10) | if has_leaf { 1 << 8 } else { 0 };
            for (label, child) in labels {
                let child_position = base ^ label as usize;
                used[child_position] = true;
                match child {
                    None => units[child_position] = 0x8000_0000 | nodes[node].value.unwrap_or(0),
                    Some(child) => {
                        units[child_position] = label as u32;
                        stack.push((child, child_position));
                    }
                }
            }
        }
        let last_used = used.iter().rposition(|used| *used).unwrap_or(0);
        units.truncate(last_used + 1);
        let mut blob = Vec::new();
        blob.extend_from_slice(&((units.len() * 4) as u32).to_le_bytes());
        for unit in units {
            blob.extend_from_slice(&unit.to_le_bytes());
        }
        blob.extend_from_slice(&replacements);
        blob
    }

    #[test]
    fn longest_rule_wins_and_unmatched_characters_are_copied() {
        let blob = build_blob(&[("A", "a"), ("AB", "x"), ("ﬁ", "fi"), ("\u{1}", "")]);
        let map = PrecompiledCharsMap::parse(&blob).unwrap();
        assert_eq!(map.longest_match(b"ABC"), Some((2, "x")));
        assert_eq!(map.longest_match(b"AC"), Some((1, "a")));
        assert_eq!(map.longest_match(b"C"), None);
        let mut out = String::new();
        map.normalize("ABAC ﬁn\u{1}é", &mut out);
        assert_eq!(out, "xaC fin\u{e9}");
    }

    #[test]
    fn rejects_malformed_blobs() {
        assert!(PrecompiledCharsMap::parse(&[1, 0]).is_err());
        assert!(PrecompiledCharsMap::parse(&[16, 0, 0, 0, 1, 2, 3, 4]).is_err());
        let mut blob = build_blob(&[("A", "a")]);
        blob.extend_from_slice(&[0xff, 0xfe, 0]);
        assert!(PrecompiledCharsMap::parse(&blob).is_err());
    }
}
