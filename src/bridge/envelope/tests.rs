//! The envelope's unit tests: round trips, refusals, and every pairing of
//! writer (earlier releases, this build, later releases) and reader.

use super::*;

fn header(except_user: Option<i64>) -> Header<'static> {
    Header {
        node_id: b"node-a",
        instance: 0xdead_beef_0102_0304,
        seq: 42,
        conversation_id: -7,
        audience: Audience {
            except_user,
            ..Audience::ALL
        },
        presence: except_user == Some(3),
        disconnect: except_user == Some(i64::MAX),
    }
}

fn encoded(h: &Header<'_>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode(h, payload, &mut out);
    out
}

#[test]
fn round_trips_with_and_without_except_user() {
    for except in [None, Some(3), Some(i64::MIN), Some(i64::MAX)] {
        let h = header(except);
        let payload = br#"{"type":"typing","user_id":3}"#;
        let buf = encoded(&h, payload);
        assert_eq!(buf.len(), header_len(&h) + payload.len());
        let (back, at) = decode(&buf).expect("decodes");
        assert_eq!(back, h);
        assert_eq!(&buf[at..], payload);
    }
}

#[test]
fn round_trips_the_v2_only_flag_and_only_user() {
    for (except, only) in [
        (None, None),
        (Some(9), None),
        (None, Some(4)),
        (Some(9), Some(-4)),
    ] {
        let h = Header {
            audience: Audience {
                except_user: except,
                v2_only: true,
                only_user: only,
                except_conn: None,
            },
            ..header(None)
        };
        let buf = encoded(&h, b"{}");
        assert_eq!(decode(&buf).expect("decodes").0, h);
    }
}

#[test]
fn round_trips_an_empty_payload_and_a_long_node_id() {
    let node = [b'x'; 255];
    let h = Header {
        node_id: &node,
        ..header(None)
    };
    let buf = encoded(&h, b"");
    let (back, at) = decode(&buf).expect("decodes");
    assert_eq!(back.node_id, &node[..]);
    assert_eq!(at, buf.len());
}

#[test]
fn this_build_writes_version_1() {
    assert_eq!(encoded(&header(None), b"{}")[0], 1);
    assert_eq!(VERSION, 1);
}

#[test]
fn rejects_empty_input_and_version_0() {
    assert_eq!(decode(&[]), Err(EnvelopeError::Empty));
    let mut buf = encoded(&header(None), b"{}");
    buf[0] = 0;
    assert_eq!(decode(&buf), Err(EnvelopeError::UnknownVersion(0)));
}

#[test]
fn rejects_an_empty_node_id() {
    assert_eq!(decode(&[VERSION, 0]), Err(EnvelopeError::EmptyNodeId));
    assert_eq!(decode(&[2, 0, 4, 0]), Err(EnvelopeError::EmptyNodeId));
}

#[test]
fn rejects_every_truncation_of_the_header_without_panicking() {
    for except in [None, Some(9)] {
        let h = header(except);
        let buf = encoded(&h, b"");
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_err(), "v1 cut at {cut} accepted");
        }
        let mut v2 = Vec::new();
        encode_extensible(2, &h, Extension::default(), b"", &mut v2);
        for cut in 0..v2.len() {
            assert!(decode(&v2[..cut]).is_err(), "v2 cut at {cut} accepted");
        }
    }
}

#[test]
fn a_header_length_that_does_not_cover_the_fields_is_refused() {
    let h = header(Some(9));
    let mut buf = Vec::new();
    encode_extensible(2, &h, Extension::default(), b"{}", &mut buf);
    let short = u16::from_be_bytes([buf[1], buf[2]]) - 4;
    buf[1..3].copy_from_slice(&short.to_be_bytes());
    assert_eq!(
        decode(&buf),
        Err(EnvelopeError::HeaderLength(usize::from(short)))
    );
    buf[1..3].copy_from_slice(&u16::MAX.to_be_bytes());
    assert_eq!(decode(&buf), Err(EnvelopeError::Truncated("header")));
}

#[test]
fn node_id_length_past_the_end_is_truncation() {
    assert_eq!(
        decode(&[VERSION, 200, b'a']),
        Err(EnvelopeError::Truncated("node id"))
    );
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap deterministic fuzz: xorshift bytes of many lengths, with the
    // first bytes forced to a plausible header so deeper paths run too.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for len in 0..400 {
        let mut buf: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        if len > 3 {
            buf[0] = (len % 3) as u8 + 1;
            buf[1] %= 16;
        }
        for reads in [Reads::CURRENT, Reads::PREVIOUS, Reads::BEFORE_PRESENCE] {
            let _ = read(&buf, reads);
        }
    }
}

// ---- every writer against every reader -----------------------------------

/// What a reader makes of an envelope, in short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Got {
    /// Delivered whole, with the header it was written with.
    Whole,
    /// Delivered without an optional part.
    Part,
    Skipped(Skip),
}

fn got(buf: &[u8], reads: Reads, written: &Header<'_>, payload: &[u8]) -> Got {
    match read(buf, reads).expect("well framed") {
        Read::Event {
            header,
            payload_at,
            partial,
            ..
        } => {
            assert_eq!(&header, written, "header read back");
            assert_eq!(&buf[payload_at..], payload, "payload read back");
            if partial {
                Got::Part
            } else {
                Got::Whole
            }
        }
        Read::Skip { reason, .. } => Got::Skipped(reason),
    }
}

/// Each kind of event this build publishes.
fn kinds() -> Vec<(&'static str, Header<'static>)> {
    let base = header(None);
    let with = |audience: Audience, presence: bool, disconnect: bool| Header {
        audience,
        presence,
        disconnect,
        ..base
    };
    vec![
        ("new_message (all)", base),
        (
            "typing (all but the typist)",
            with(Audience::except_user(5), false, false),
        ),
        (
            "receipt (v2 only)",
            with(
                Audience {
                    v2_only: true,
                    ..Audience::ALL
                },
                false,
                false,
            ),
        ),
        (
            "call signal (one user)",
            with(
                Audience {
                    only_user: Some(8),
                    v2_only: true,
                    ..Audience::ALL
                },
                false,
                false,
            ),
        ),
        ("presence report", with(Audience::ALL, true, false)),
        (
            "disconnect order",
            with(
                Audience {
                    only_user: Some(8),
                    ..Audience::ALL
                },
                false,
                true,
            ),
        ),
    ]
}

const READERS: [(&str, Reads); 3] = [
    ("before presence", Reads::BEFORE_PRESENCE),
    ("previous", Reads::PREVIOUS),
    ("current", Reads::CURRENT),
];

#[test]
fn what_this_build_writes_every_release_reads_or_skips_and_plain_frames_always_pass() {
    use Got::*;
    let expected: [[Got; 3]; 6] = [
        [Whole, Whole, Whole],
        [Whole, Whole, Whole],
        [Whole, Whole, Whole],
        [Skipped(Skip::Flags), Whole, Whole],
        [Skipped(Skip::Flags), Whole, Whole],
        [Skipped(Skip::Flags), Whole, Whole],
    ];
    for ((kind, h), expected) in kinds().into_iter().zip(expected) {
        let buf = encoded(&h, b"{}");
        for ((reader, reads), want) in READERS.iter().zip(expected) {
            assert_eq!(
                got(&buf, *reads, &h, b"{}"),
                want,
                "{kind} read by {reader}"
            );
        }
        // Emulated earlier releases publish only what they knew.
        for (reader, reads) in READERS {
            assert_eq!(
                reads.can_write(&h),
                got(&buf, reads, &h, b"{}") == Whole,
                "{kind}: {reader} writes it iff it reads it"
            );
        }
    }
}

#[test]
fn a_later_release_writing_version_2_or_3_is_read_in_part() {
    use Got::*;
    let payload = br#"{"type":"chat_message_edited"}"#;
    // A field of a bit defined later: 12 bytes a reader of version 2 skips.
    let field = [7u8; 12];
    let cases: [(&str, u8, Extension<'_>, [Got; 3]); 4] = [
        (
            "version 2, known bits",
            2,
            Extension::default(),
            [Skipped(Skip::Version), Skipped(Skip::Version), Whole],
        ),
        (
            "version 3, known bits and an unknown field",
            3,
            Extension {
                fields: &field,
                ..Extension::default()
            },
            [Skipped(Skip::Version), Skipped(Skip::Version), Whole],
        ),
        (
            "version 3, an optional bit with its field",
            3,
            Extension {
                optional: 0b1,
                fields: &field,
                ..Extension::default()
            },
            [Skipped(Skip::Version), Skipped(Skip::Version), Part],
        ),
        (
            "version 3, a required bit with its field",
            3,
            Extension {
                required: 0b10_0000,
                fields: &field,
                ..Extension::default()
            },
            [
                Skipped(Skip::Version),
                Skipped(Skip::Version),
                Skipped(Skip::Required),
            ],
        ),
    ];
    for (case, version, extension, expected) in cases {
        for (kind, h) in kinds() {
            let mut buf = Vec::new();
            encode_extensible(version, &h, extension, payload, &mut buf);
            for ((reader, reads), want) in READERS.iter().zip(expected) {
                assert_eq!(
                    got(&buf, *reads, &h, payload),
                    want,
                    "{case}, {kind}, read by {reader}"
                );
            }
        }
    }
}

#[test]
fn a_version_1_flag_nobody_knows_is_skipped_by_every_reader() {
    let h = header(None);
    let mut buf = encoded(&h, b"{}");
    let flags_at = header_len(&h) - 1;
    buf[flags_at] = 0b10_0000;
    for (reader, reads) in READERS {
        assert_eq!(
            read(&buf, reads),
            Ok(Read::Skip {
                reason: Skip::Flags,
                version: 1,
                node_id: Some(&b"node-a"[..]),
            }),
            "{reader}"
        );
    }
    assert_eq!(decode(&buf), Err(EnvelopeError::Skipped(Skip::Flags)));
}

#[test]
fn skip_labels_are_the_documented_ones() {
    let labels: Vec<&str> = Skip::ALL.iter().map(|s| s.label()).collect();
    assert_eq!(labels, ["version", "flags", "required", "optional"]);
}
