//! The header-map buffer as a host serializes it: any bytes (a short, lying
//! or truncated buffer) read as the pairs before the fault, what was read
//! serializes back to the same pairs, and a write is read back.
#![no_main]

use gateway_common::header_map::HeaderMap;
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 4] = [":path", "x-ca-key", "X-Forwarded-For", ""];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let mut map = HeaderMap::parse(bytes.to_vec());
    let pairs: Vec<(Vec<u8>, Vec<u8>)> =
        map.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    assert_eq!(pairs.len(), map.len());
    let again = HeaderMap::parse(HeaderMap::serialize(&pairs));
    assert!(again.iter().eq(map.iter()));

    let name = NAMES[usize::from(selector) % NAMES.len()];
    let _ = map.get_text(name);
    let value = (selector & 0x80 == 0).then_some("written");
    map.set(name, value);
    assert_eq!(map.get(name), value.map(str::as_bytes));
    assert!(map.iter().count() <= pairs.len() + 1);
});
