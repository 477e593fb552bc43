//! The controller's records (crates/controller/src/codec.rs): requests in its log,
//! configurations and results in its store. Any input decodes or is refused, never panics;
//! what decodes encodes to something that decodes to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mosaic_controller::codec;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = codec::decode_request(data) {
        let again = codec::decode_request(&codec::encode_request(&request));
        assert_eq!(again.ok(), Some(request));
    }
    if let Ok(config) = codec::decode_configuration(data) {
        let again = codec::decode_configuration(&codec::encode_configuration(&config));
        assert_eq!(again.ok(), Some(config));
    }
    if let Ok(result) = codec::decode_result(data) {
        let again = codec::decode_result(&codec::encode_result(&result));
        assert_eq!(again.ok(), Some(result));
    }
});
