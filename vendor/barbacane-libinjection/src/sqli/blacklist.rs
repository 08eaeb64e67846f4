// SQL injection blacklist checker - matches C implementation exactly

use super::sqli_data;

/// Check if a fingerprint is blacklisted
/// This matches libinjection_sqli_blacklist from the C version
pub fn is_blacklisted(fingerprint: &str) -> bool {
    // Match the C version: convert v0 fingerprint to v1 format
    // v0: up to 5 chars, mixed case  
    // v1: '0' prefix, up to 5 more chars, upper case
    
    if fingerprint.is_empty() {
        return false;
    }
    
    // The v1 fingerprint, '0' then the fingerprint, on the stack (the
    // lookup upper-cases it); a fingerprint has at most 8 bytes.
    let bytes = fingerprint.as_bytes();
    let mut fp2 = [0u8; 9];
    let len = bytes.len().min(8) + 1;
    fp2[0] = b'0';
    fp2[1..len].copy_from_slice(&bytes[..len - 1]);
    
    // Check if this fingerprint exists in the keywords table with type 'F'
    sqli_data::lookup_word_type_bytes(&fp2[..len]) == Some(crate::sqli::TokenType::Fingerprint)
}