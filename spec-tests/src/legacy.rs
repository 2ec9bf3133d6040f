//! The folded form of legacy exception handling's `try`, which the `wast` crate no longer
//! parses: `(try $l (result t) (do instr*) (catch $e instr*)* (catch_all instr*)?)` and
//! `(try ... (do instr*) (delegate n))`. [`unfold_try`] rewrites each into the plain form the
//! crate does parse (`try $l (result t) instr* catch $e instr* ... end`, or `... delegate n`),
//! which the text format defines as equivalent. Everything else is left as it was, byte for
//! byte, and an unfolded `try` keeps its line count, so line numbers in messages stay those of
//! the file.

/// `text` with every folded `try` unfolded.
pub fn unfold_try(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        match skip_non_code(bytes, i) {
            Some(next) => i = next,
            None if bytes[i] == b'(' && keyword_at(bytes, i + 1) == "try" => {
                let end = group_end(bytes, i);
                out.push_str(&text[copied..i]);
                out.push_str(&unfold_group(&text[i..end]));
                i = end;
                copied = end;
            }
            None => i += 1,
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// Unfolds one `(try ...)` group (its nested groups included).
fn unfold_group(group: &str) -> String {
    // The inside, after `(try`, with any folded `try` in it unfolded first.
    let inner = unfold_try(&group[4..group.len() - 1]);
    let mut out = String::from("try");
    let mut closed = false;
    for item in items(&inner) {
        let keyword = if item.starts_with('(') { keyword_at(item.as_bytes(), 1) } else { "" };
        match keyword {
            "do" | "catch" | "catch_all" | "delegate" => {
                // `do`'s instructions follow `try` directly; the others keep their keyword.
                let body = &item[1 + keyword.len()..item.len() - 1];
                if keyword != "do" {
                    out.push(' ');
                    out.push_str(keyword);
                }
                out.push(' ');
                out.push_str(body);
                closed |= keyword == "delegate";
            }
            // The label and block type.
            _ => {
                out.push(' ');
                out.push_str(item);
            }
        }
    }
    if !closed {
        out.push_str(" end");
    }
    // Keep the line count (item separators were newlines too).
    let lost = group.matches('\n').count().saturating_sub(out.matches('\n').count());
    out.extend(std::iter::repeat_n('\n', lost));
    out
}

/// The top-level items of `text`: atoms and parenthesised groups, without comments.
fn items(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut items = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if let Some(next) = skip_non_code(bytes, i) {
            // A string is an item of its own (never at the top level of a `try`, but harmless).
            if bytes[i] == b'"' {
                items.push(&text[i..next]);
            }
            i = next;
        } else if bytes[i].is_ascii_whitespace() {
            i += 1;
        } else if bytes[i] == b'(' {
            let end = group_end(bytes, i);
            items.push(&text[i..end]);
            i = end;
        } else {
            let start = i;
            while i < bytes.len() && !is_delimiter(bytes[i]) {
                i += 1;
            }
            items.push(&text[start..i]);
        }
    }
    items
}

fn is_delimiter(byte: u8) -> bool {
    byte.is_ascii_whitespace() || byte == b'(' || byte == b')' || byte == b'"' || byte == b';'
}

/// The keyword starting at `i` (up to the next delimiter).
fn keyword_at(bytes: &[u8], i: usize) -> &str {
    let end = (i..bytes.len()).find(|&j| is_delimiter(bytes[j])).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[i.min(end)..end]).unwrap_or("")
}

/// If a comment or string starts at `i`, the index just after it.
fn skip_non_code(bytes: &[u8], i: usize) -> Option<usize> {
    match (bytes[i], bytes.get(i + 1)) {
        (b';', Some(b';')) => Some((i..bytes.len()).find(|&j| bytes[j] == b'\n').unwrap_or(bytes.len())),
        (b'(', Some(b';')) => {
            // Block comments nest.
            let (mut depth, mut j) = (0usize, i);
            while j < bytes.len() {
                if bytes[j..].starts_with(b"(;") {
                    depth += 1;
                    j += 2;
                } else if bytes[j..].starts_with(b";)") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        return Some(j);
                    }
                } else {
                    j += 1;
                }
            }
            Some(bytes.len())
        }
        (b'"', _) => {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            Some((j + 1).min(bytes.len()))
        }
        _ => None,
    }
}

/// The index just after the `)` that closes the group opened at `start`.
fn group_end(bytes: &[u8], start: usize) -> usize {
    let (mut depth, mut i) = (0usize, start);
    while i < bytes.len() {
        if let Some(next) = skip_non_code(bytes, i) {
            i = next;
            continue;
        }
        match bytes[i] {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::unfold_try;

    #[test]
    fn folded_try_becomes_plain() {
        assert_eq!(
            unfold_try(
                "(func (try $l (result i32) (do (i32.const 1)) (catch $e (rethrow 0)) (catch_all (i32.const 2))))"
            ),
            "(func try $l (result i32)  (i32.const 1) catch  $e (rethrow 0) catch_all  (i32.const 2) end)"
        );
        assert_eq!(unfold_try("(try (do (try (do) (delegate 0))))"), "try  try  delegate  0 end");
    }

    #[test]
    fn everything_else_is_untouched() {
        let text = "(module (func (try_table (catch_all 0))) ;; (try (do))\n (; (try ;) \"(try\")";
        assert_eq!(unfold_try(text), text);
    }
}
