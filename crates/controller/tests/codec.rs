//! The controller's encodings: every request, configuration and command result (every
//! `Outcome` and every `Error` variant) decodes to itself, and no bytes (random, truncated or
//! altered encodings) make a decoder panic.

use std::collections::BTreeSet;
use std::mem::discriminant;

use mosaic_controller::arbitrary::{self, ERROR_VARIANTS, Values, error_variant};
use mosaic_controller::codec::{
    FORMAT_VERSION, decode_configuration, decode_request, decode_result, encode_configuration,
    encode_request, encode_result,
};
use mosaic_controller::{Command, Request};
use mosaic_engine::ClientId;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// The shared strategy generates every `Error` variant, and each round-trips.
#[test]
fn every_error_variant_is_covered() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = arbitrary::error();
    let mut seen = BTreeSet::new();
    let mut kinds = Vec::new();
    for _ in 0..2_000 {
        let error = strategy.new_tree(&mut runner).expect("generate").current();
        assert!(error_variant(&error) < ERROR_VARIANTS, "{error:?}");
        if seen.insert(error_variant(&error)) {
            kinds.push(discriminant(&error));
        }
        let bytes = encode_result(&Err(error.clone()));
        assert_eq!(decode_result(&bytes), Ok(Err(error)));
    }
    assert_eq!(seen.len(), ERROR_VARIANTS, "variants generated: {seen:?}");
    assert_eq!(kinds.len(), ERROR_VARIANTS);
}

/// Checks that every strict prefix of `bytes` and `bytes` with a trailing byte are refused,
/// and that altering any one byte never panics.
fn check_damaged<T: std::fmt::Debug>(
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, mosaic_controller::codec::DecodeError>,
) {
    for len in 0..bytes.len() {
        assert!(decode(&bytes[..len]).is_err(), "a prefix of {len} of {} bytes", bytes.len());
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(decode(&longer).is_err(), "a trailing byte is refused");
    for position in 0..bytes.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut altered = bytes.to_vec();
            altered[position] ^= flip;
            let _ = decode(&altered);
        }
    }
}

proptest! {
    #[test]
    fn a_request_round_trips(request in arbitrary::request(Values::Any)) {
        let bytes = encode_request(&request);
        prop_assert_eq!(bytes[0], FORMAT_VERSION);
        prop_assert_eq!(decode_request(&bytes), Ok(request));
        check_damaged(&bytes, decode_request);
    }

    #[test]
    fn a_configuration_round_trips(config in arbitrary::configuration(Values::Any)) {
        let bytes = encode_configuration(&config);
        prop_assert_eq!(bytes[0], FORMAT_VERSION);
        prop_assert_eq!(decode_configuration(&bytes), Ok(config));
        check_damaged(&bytes, decode_configuration);
    }

    #[test]
    fn a_command_result_round_trips(result in arbitrary::result(Values::Any)) {
        let bytes = encode_result(&result);
        prop_assert_eq!(bytes[0], FORMAT_VERSION);
        prop_assert_eq!(decode_result(&bytes), Ok(result));
        check_damaged(&bytes, decode_result);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_request(&bytes);
        let _ = decode_configuration(&bytes);
        let _ = decode_result(&bytes);
        let mut versioned = bytes.clone();
        versioned.insert(0, FORMAT_VERSION);
        let _ = decode_request(&versioned);
        let _ = decode_configuration(&versioned);
        let _ = decode_result(&versioned);
    }
}

#[test]
fn another_format_version_is_refused() {
    let request =
        Request { client: ClientId(1), seq: 1, command: Command::Rebalance { max_moves: None } };
    let mut bytes = encode_request(&request).to_vec();
    bytes[0] = FORMAT_VERSION + 1;
    let error = decode_request(&bytes).unwrap_err();
    assert!(error.to_string().contains("version"), "{error}");
}
