//! Random values built from SQL's words, operators, quotes, comments and
//! stray bytes, read by both ports under every flag set libinjection uses:
//! the fingerprint, `is_sqli` and `detect` must agree. The published crate
//! is quadratic on long words, so the values stay short.

const PIECES: &[&str] = &[
    "select", "SELECT", "union", "UNION", "all", "ALL", "from", "where", "or", "OR", "and", "AND",
    "not", "1", "0", "42", "1e5", "0x1f", "'", "\"", "`", "(", ")", ",", ";", ".", "=", "<", ">",
    "<=>", "!=", "||", "&&", "-", "--", "/*", "*/", "#", "@", "@@version", " ", "  ", "\t", "\n",
    "a", "b", "users", "password", "sleep", "benchmark", "char", "concat", "lock in share mode",
    "group by", "order by", "like", "is", "null", "case", "when", "then", "end", "into", "outfile",
    "limit", "x'41'", "N'a'", "$1", "{", "}", ":", "?", "\\", "é", "\u{a0}", "drop", "table",
    "insert", "values", "exec", "xp_cmdshell", "waitfor", "delay", "Item", "it's", "O'Brien",
    "with", "open", "as", "f", "+", "%", "in", "boolean", "mode", "collate", "binary", "left",
    "join", "on", "having", "desc", "asc", "$$", "e", "E", "1'", "' or '", "'='", "admin'--",
];

/// The flag sets `libinjection_is_sqli` reads a value with, and none.
const FLAG_SETS: [u32; 6] = [0, 1 | 8, 1 | 16, 2 | 8, 2 | 16, 4 | 16];

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn value(random: &mut XorShift) -> Vec<u8> {
    let count = 1 + (random.next() % 12) as usize;
    let mut value = Vec::new();
    for _ in 0..count {
        let r = random.next();
        if r % 17 == 0 {
            value.push((r >> 8) as u8);
        } else {
            value.extend_from_slice(PIECES[(r >> 8) as usize % PIECES.len()].as_bytes());
            if r % 3 == 0 {
                value.push(b' ');
            }
        }
    }
    value
}

#[test]
fn the_vendored_port_reads_every_value_as_the_published_one_does() {
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut found = 0;
    for _ in 0..100_000 {
        let value = value(&mut random);
        let shown = String::from_utf8_lossy(&value);
        for flags in FLAG_SETS {
            let published = || {
                published::sqli::SqliState::new(&value, published::sqli::SqliFlags::new(flags))
            };
            let vendored =
                || vendored::sqli::SqliState::new(&value, vendored::sqli::SqliFlags::new(flags));
            assert_eq!(
                published().get_fingerprint().as_str(),
                vendored().get_fingerprint().as_str(),
                "the fingerprint of {shown:?} with flags {flags}"
            );
            let is_sqli = published().is_sqli();
            assert_eq!(is_sqli, vendored().is_sqli(), "is_sqli of {shown:?} with flags {flags}");
            assert_eq!(published().detect(), vendored().detect(), "detect of {shown:?}");
            found += usize::from(is_sqli);
        }
    }
    // The values reach the blacklist, not only its misses.
    assert!(found > 1_000, "only {found} readings were SQL injection");
}
