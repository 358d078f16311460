//! Pure helpers on bytes and strings, independent of nginx and Python, so
//! they are unit-tested by `cargo test`.

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes one query-string component: `+` is a space, `%XX` a byte.
/// A malformed escape is kept as it is, as browsers and nginx do.
pub fn url_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == b'+' {
            out.push(b' ');
        } else if c == b'%' && i + 2 < s.len() {
            match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(c),
            }
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

/// Splits a raw query string into decoded (name, value) pairs, in order.
/// `a&b=` gives ("a", "") and ("b", ""); empty components are skipped.
pub fn parse_query(args: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    args.split(|&c| c == b'&' || c == b';')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.iter().position(|&c| c == b'=') {
            Some(eq) => (url_decode(&kv[..eq]), url_decode(&kv[eq + 1..])),
            None => (url_decode(kv), Vec::new()),
        })
        .collect()
}

/// Why a header can't be sent as given.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderError {
    EmptyName,
    BadNameChar(u8),
    BadValueChar(u8),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::EmptyName => write!(f, "header name is empty"),
            HeaderError::BadNameChar(c) => write!(f, "header name contains {:?}", *c as char),
            HeaderError::BadValueChar(c) => write!(f, "header value contains {:?}", *c as char),
        }
    }
}

/// The bytes allowed in a header name (RFC 9110 `tchar`): one lookup per
/// byte, as this runs for every header a response sets.
const TOKEN_CHAR: [bool; 256] = {
    const SEPARATORS: &[u8] = b"()<>@,;:\\\"/[]?={} \t";
    let mut t = [false; 256];
    let mut c = 0x21;
    while c < 0x7f {
        let mut sep = false;
        let mut i = 0;
        while i < SEPARATORS.len() {
            sep |= SEPARATORS[i] == c as u8;
            i += 1;
        }
        t[c] = !sep;
        c += 1;
    }
    t
};

/// A header name must be an RFC 9110 token: no separators, spaces or controls.
pub fn check_header_name(name: &[u8]) -> Result<(), HeaderError> {
    if name.is_empty() {
        return Err(HeaderError::EmptyName);
    }
    match name.iter().find(|&&c| !TOKEN_CHAR[c as usize]) {
        Some(&c) => Err(HeaderError::BadNameChar(c)),
        None => Ok(()),
    }
}

/// A header value may hold anything but CR, LF and NUL (no header injection).
pub fn check_header_value(value: &[u8]) -> Result<(), HeaderError> {
    match value.iter().find(|&&c| c == b'\r' || c == b'\n' || c == 0) {
        Some(&c) => Err(HeaderError::BadValueChar(c)),
        None => Ok(()),
    }
}

/// Parses an nginx size: digits with an optional k/K or m/M suffix.
pub fn parse_size(s: &str) -> Option<usize> {
    let (num, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1024),
        b'm' | b'M' => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    if num.is_empty() || !num.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    num.parse::<usize>().ok()?.checked_mul(mult)
}

/// Python's first line number for code that ends on conf line `end_line`
/// and spans `text`: nginx reports where a directive ends, the code starts
/// as many lines earlier as it has newlines.
pub fn first_line(end_line: usize, text: &[u8]) -> usize {
    let newlines = text.iter().filter(|&&c| c == b'\n').count();
    end_line.saturating_sub(newlines).max(1)
}

/// Real line breaks in the last argument of a directive, given nginx.conf
/// text ending with the directive's `;`: the argument is the quoted (or
/// bare) token before it; where its opening quote is no longer in `text`
/// the token starts at `text`'s start.
pub fn last_token_newlines(text: &[u8]) -> Option<usize> {
    let end = text.iter().rposition(|&c| c == b';')?;
    let body = &text[..end];
    let close = body.iter().rposition(|c| !c.is_ascii_whitespace())?;
    let quote = body[close];
    let token = if quote == b'"' || quote == b'\'' {
        let inner = &body[..close];
        // the opening quote: the last unescaped one (an even run of
        // backslashes before it)
        let mut open = 0;
        for i in (0..inner.len()).rev() {
            if inner[i] == quote && inner[..i].iter().rev().take_while(|&&c| c == b'\\').count() % 2 == 0 {
                open = i + 1;
                break;
            }
        }
        &inner[open..]
    } else {
        let start = body[..=close].iter().rposition(|c| c.is_ascii_whitespace()).map_or(0, |i| i + 1);
        &body[start..=close]
    };
    Some(token.iter().filter(|&&c| c == b'\n').count())
}

/// Shortens a long log message to at most `max` bytes, keeping its first
/// line and its end (where a traceback names the exception).
pub fn shorten_middle(msg: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if msg.len() <= max {
        return msg.into();
    }
    const CUT: &str = "\n  ...\n";
    let mut head_end = msg.find('\n').unwrap_or(0).min(max / 4);
    while !msg.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = msg.len() - (max - head_end - CUT.len());
    while !msg.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    format!("{}{}{}", &msg[..head_end], CUT, &msg[tail_start..]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_and_percent() {
        assert_eq!(url_decode(b"a+b%21"), b"a b!");
        assert_eq!(url_decode(b"%e2%82%AC"), "€".as_bytes());
        assert_eq!(url_decode(b"%ff"), vec![0xff]);
    }

    #[test]
    fn keeps_malformed_escapes() {
        assert_eq!(url_decode(b"100%"), b"100%");
        assert_eq!(url_decode(b"%4"), b"%4");
        assert_eq!(url_decode(b"%zz1"), b"%zz1");
        assert_eq!(url_decode(b"x%2"), b"x%2");
    }

    #[test]
    fn parses_query_in_order() {
        let q = parse_query(b"a=1&b=x+y&&c&d=%3D&a=2");
        let q: Vec<(&[u8], &[u8])> = q.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        assert_eq!(
            q,
            vec![
                (&b"a"[..], &b"1"[..]),
                (b"b", b"x y"),
                (b"c", b""),
                (b"d", b"="),
                (b"a", b"2")
            ]
        );
        assert!(parse_query(b"").is_empty());
    }

    #[test]
    fn checks_header_names() {
        assert_eq!(check_header_name(b"X-Foo"), Ok(()));
        assert_eq!(check_header_name(b""), Err(HeaderError::EmptyName));
        assert_eq!(check_header_name(b"X Foo"), Err(HeaderError::BadNameChar(b' ')));
        assert_eq!(check_header_name(b"X:"), Err(HeaderError::BadNameChar(b':')));
        assert_eq!(check_header_name(b"a\nb"), Err(HeaderError::BadNameChar(b'\n')));
    }

    #[test]
    fn checks_header_values() {
        assert_eq!(check_header_value(b"text/html; charset=utf-8"), Ok(()));
        assert_eq!(check_header_value("\u{e9}t\u{e9}".as_bytes()), Ok(()));
        assert_eq!(check_header_value(b"a\r\nSet-Cookie: x"), Err(HeaderError::BadValueChar(b'\r')));
        assert_eq!(check_header_value(b"a\nb"), Err(HeaderError::BadValueChar(b'\n')));
        assert_eq!(check_header_value(b"a\0b"), Err(HeaderError::BadValueChar(0)));
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        // (a multi-byte character where the head is cut must not panic)
        let long = format!("{}\n{}", "\u{e9}".repeat(800), "x".repeat(100));
        assert!(shorten_middle(&long, 375).len() <= 375);
        assert_eq!(parse_size("256k"), Some(256 * 1024));
        assert_eq!(parse_size("1M"), Some(1024 * 1024));
        assert_eq!(parse_size("k"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("1g"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999999999999m"), None);
    }

    #[test]
    fn last_token_newlines_counts_written_breaks_only() {
        assert_eq!(last_token_newlines(b"python \"a\\nb\";"), Some(0));
        assert_eq!(last_token_newlines(b"python \"a\nb\\nc\" ;"), Some(1));
        assert_eq!(last_token_newlines(b"x;\n  python_set $v 'f(r)\n';"), Some(1));
        assert_eq!(last_token_newlines(b"a\nb\\nc\";"), Some(1)); // opening quote gone
        assert_eq!(last_token_newlines(b"python_access f(r);"), Some(0));
        assert_eq!(last_token_newlines(b"no semicolon"), None);
    }

    #[test]
    fn first_line_counts_back_newlines() {
        assert_eq!(first_line(10, b"x = 1"), 10);
        assert_eq!(first_line(10, b"\nx = 1\ny = 2\n"), 7);
        assert_eq!(first_line(1, b"\n\n"), 1);
    }

    #[test]
    fn shortens_long_messages_keeping_the_end() {
        let msg = format!("Traceback:\n{}\nZeroDivisionError: x", "  frame\n".repeat(500));
        let s = shorten_middle(&msg, 300);
        assert!(s.len() <= 300, "{}", s.len());
        assert!(s.starts_with("Traceback:"));
        assert!(s.ends_with("ZeroDivisionError: x"));
        assert_eq!(shorten_middle("short", 300), "short");
    }
}
