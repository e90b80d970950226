//! The DNS wire format (RFC 1035), as much as the cluster DNS needs: parsing a
//! query's header, question and EDNS OPT record, and building responses.

use std::net::Ipv4Addr;

/// Record type A.
pub const TYPE_A: u16 = 1;
/// Record type NS.
pub const TYPE_NS: u16 = 2;
/// Record type CNAME.
pub const TYPE_CNAME: u16 = 5;
/// Record type SOA.
pub const TYPE_SOA: u16 = 6;
/// Record type PTR.
pub const TYPE_PTR: u16 = 12;
/// Record type AAAA.
pub const TYPE_AAAA: u16 = 28;
/// Record type SRV.
pub const TYPE_SRV: u16 = 33;
/// Record type OPT (EDNS).
pub const TYPE_OPT: u16 = 41;
/// Query type ANY.
pub const TYPE_ANY: u16 = 255;
/// Class IN.
pub const CLASS_IN: u16 = 1;

/// Response code NOERROR.
pub const RCODE_NOERROR: u8 = 0;
/// Response code FORMERR.
pub const RCODE_FORMERR: u8 = 1;
/// Response code SERVFAIL.
pub const RCODE_SERVFAIL: u8 = 2;
/// Response code NXDOMAIN.
pub const RCODE_NXDOMAIN: u8 = 3;
/// Response code NOTIMP.
pub const RCODE_NOTIMP: u8 = 4;

/// Why a packet was not a usable query.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Too short, bad label, compression in the question, trailing garbage...
    #[error("malformed packet")]
    Malformed,
    /// A response, not a query.
    #[error("not a query")]
    NotAQuery,
}

/// A parsed query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query<'a> {
    /// Message id.
    pub id: u16,
    /// Opcode (0 = QUERY).
    pub opcode: u8,
    /// Recursion desired.
    pub rd: bool,
    /// The question name in lower case, without the trailing dot.
    pub name: String,
    /// Question type.
    pub qtype: u16,
    /// Question class.
    pub qclass: u16,
    /// The raw question section (name, type, class), echoed in responses.
    pub question: &'a [u8],
    /// EDNS UDP payload size, if the query had an OPT record.
    pub edns_size: Option<u16>,
}

fn u16_at(b: &[u8], i: usize) -> Result<u16, WireError> {
    match (b.get(i), b.get(i + 1)) {
        (Some(h), Some(l)) => Ok(u16::from_be_bytes([*h, *l])),
        _ => Err(WireError::Malformed),
    }
}

/// Parse a query. Exactly one question; no compression in it.
pub fn parse_query(msg: &[u8]) -> Result<Query<'_>, WireError> {
    if msg.len() < 12 {
        return Err(WireError::Malformed);
    }
    let id = u16_at(msg, 0)?;
    let flags = u16_at(msg, 2)?;
    if flags & 0x8000 != 0 {
        return Err(WireError::NotAQuery);
    }
    let opcode = ((flags >> 11) & 0x0f) as u8;
    let rd = flags & 0x0100 != 0;
    let qd = u16_at(msg, 4)?;
    let an = u16_at(msg, 6)?;
    let ns = u16_at(msg, 8)?;
    let ar = u16_at(msg, 10)?;
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return Err(WireError::Malformed);
    }
    let mut i = 12;
    let mut name = String::new();
    loop {
        let len = usize::from(*msg.get(i).ok_or(WireError::Malformed)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return Err(WireError::Malformed);
        }
        let label = msg.get(i..i + len).ok_or(WireError::Malformed)?;
        if !name.is_empty() {
            name.push('.');
        }
        for &c in label {
            if c == b'.' || !(0x21..0x7f).contains(&c) {
                return Err(WireError::Malformed);
            }
            name.push(char::from(c.to_ascii_lowercase()));
        }
        i += len;
        if name.len() > 253 {
            return Err(WireError::Malformed);
        }
    }
    let qtype = u16_at(msg, i)?;
    let qclass = u16_at(msg, i + 2)?;
    i += 4;
    let question = &msg[12..i];
    let mut edns_size = None;
    if ar == 1 {
        // OPT: root name, type 41, class = payload size, ttl, rdlength, rdata.
        if msg.get(i) != Some(&0) {
            return Err(WireError::Malformed);
        }
        let t = u16_at(msg, i + 1)?;
        let class = u16_at(msg, i + 3)?;
        let rdlen = usize::from(u16_at(msg, i + 9)?);
        if t != TYPE_OPT {
            return Err(WireError::Malformed);
        }
        i += 11 + rdlen;
        if i > msg.len() {
            return Err(WireError::Malformed);
        }
        edns_size = Some(class.max(512));
    }
    if i != msg.len() {
        return Err(WireError::Malformed);
    }
    Ok(Query {
        id,
        opcode,
        rd,
        name,
        qtype,
        qclass,
        question,
        edns_size,
    })
}

/// Record data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RData {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An alias.
    Cname(String),
    /// A service location.
    Srv {
        /// Priority.
        priority: u16,
        /// Weight.
        weight: u16,
        /// Port.
        port: u16,
        /// Target host name.
        target: String,
    },
    /// Start of authority (negative answers).
    Soa {
        /// Primary name server.
        mname: String,
        /// Responsible mailbox.
        rname: String,
        /// Serial.
        serial: u32,
        /// Negative caching TTL.
        minimum: u32,
    },
}

impl RData {
    fn rtype(&self) -> u16 {
        match self {
            RData::A(_) => TYPE_A,
            RData::Cname(_) => TYPE_CNAME,
            RData::Srv { .. } => TYPE_SRV,
            RData::Soa { .. } => TYPE_SOA,
        }
    }
}

/// A resource record; `name: None` means "the question name" (compressed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Owner name, `None` for the question name.
    pub name: Option<String>,
    /// Time to live in seconds.
    pub ttl: u32,
    /// The data.
    pub data: RData,
}

/// A response to build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// Response code.
    pub rcode: u8,
    /// Authoritative answer.
    pub authoritative: bool,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section.
    pub authority: Vec<Record>,
    /// Additional section.
    pub additional: Vec<Record>,
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        let bytes = &label.as_bytes()[..label.len().min(63)];
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.push(0);
}

fn put_record(out: &mut Vec<u8>, r: &Record) {
    match &r.name {
        None => out.extend_from_slice(&[0xc0, 0x0c]),
        Some(n) => put_name(out, n),
    }
    out.extend_from_slice(&r.data.rtype().to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&r.ttl.to_be_bytes());
    let len_at = out.len();
    out.extend_from_slice(&[0, 0]);
    match &r.data {
        RData::A(ip) => out.extend_from_slice(&ip.octets()),
        RData::Cname(t) => put_name(out, t),
        RData::Srv {
            priority,
            weight,
            port,
            target,
        } => {
            out.extend_from_slice(&priority.to_be_bytes());
            out.extend_from_slice(&weight.to_be_bytes());
            out.extend_from_slice(&port.to_be_bytes());
            put_name(out, target);
        }
        RData::Soa {
            mname,
            rname,
            serial,
            minimum,
        } => {
            put_name(out, mname);
            put_name(out, rname);
            for v in [*serial, 7200, 1800, 86400, *minimum] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
    let len = (out.len() - len_at - 2) as u16;
    out[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
}

fn header(q: &Query<'_>, rcode: u8, aa: bool, tc: bool, counts: [u16; 3], edns: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&q.id.to_be_bytes());
    let mut flags: u16 = 0x8000 | (u16::from(q.opcode) << 11) | 0x0080 | u16::from(rcode & 0x0f);
    if aa {
        flags |= 0x0400;
    }
    if tc {
        flags |= 0x0200;
    }
    if q.rd {
        flags |= 0x0100;
    }
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&counts[0].to_be_bytes());
    out.extend_from_slice(&counts[1].to_be_bytes());
    out.extend_from_slice(&(counts[2] + u16::from(edns)).to_be_bytes());
    out.extend_from_slice(q.question);
    out
}

fn put_opt(out: &mut Vec<u8>) {
    // root, OPT, payload 1232, ext-rcode/version/flags 0, no options
    out.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
}

/// Encode `resp` for `q`, at most `max` bytes; when it does not fit the
/// answer is dropped and TC set (the client retries over TCP).
pub fn encode(q: &Query<'_>, resp: &Response, max: usize) -> Vec<u8> {
    let edns = q.edns_size.is_some();
    let counts = [
        resp.answers.len() as u16,
        resp.authority.len() as u16,
        resp.additional.len() as u16,
    ];
    let mut out = header(q, resp.rcode, resp.authoritative, false, counts, edns);
    for r in resp
        .answers
        .iter()
        .chain(&resp.authority)
        .chain(&resp.additional)
    {
        put_record(&mut out, r);
    }
    if edns {
        put_opt(&mut out);
    }
    if out.len() > max {
        let mut out = header(q, resp.rcode, resp.authoritative, true, [0, 0, 0], edns);
        if edns {
            put_opt(&mut out);
        }
        return out;
    }
    out
}

/// A bare response with `rcode` (FORMERR, SERVFAIL, NOTIMP).
pub fn error_response(q: &Query<'_>, rcode: u8) -> Vec<u8> {
    encode(
        q,
        &Response {
            rcode,
            ..Default::default()
        },
        usize::MAX,
    )
}

/// Build a query (for clients, tests and the bench).
pub fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0x0100u16.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    put_name(&mut out, name);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out
}

/// A decoded answer record (for clients and tests): owner name, type, data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Owner name.
    pub name: String,
    /// Record type.
    pub rtype: u16,
    /// Decoded data: an address, a name, or `prio weight port target`.
    pub data: String,
}

/// A decoded response (for clients and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Message id.
    pub id: u16,
    /// Response code.
    pub rcode: u8,
    /// Truncated.
    pub tc: bool,
    /// Authoritative.
    pub aa: bool,
    /// Answer section.
    pub answers: Vec<Answer>,
    /// Number of authority records.
    pub authority: usize,
}

fn read_name(msg: &[u8], mut i: usize) -> Result<(String, usize), WireError> {
    let mut name = String::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(i).ok_or(WireError::Malformed)?;
        if len & 0xc0 == 0xc0 {
            let ptr = usize::from(u16_at(msg, i)? & 0x3fff);
            if end.is_none() {
                end = Some(i + 2);
            }
            jumps += 1;
            if jumps > 16 {
                return Err(WireError::Malformed);
            }
            i = ptr;
            continue;
        }
        let len = usize::from(len);
        i += 1;
        if len == 0 {
            break;
        }
        let label = msg.get(i..i + len).ok_or(WireError::Malformed)?;
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(&String::from_utf8_lossy(label));
        i += len;
    }
    Ok((name, end.unwrap_or(i)))
}

/// Decode a response.
pub fn decode_response(msg: &[u8]) -> Result<Decoded, WireError> {
    if msg.len() < 12 {
        return Err(WireError::Malformed);
    }
    let flags = u16_at(msg, 2)?;
    let qd = u16_at(msg, 4)?;
    let an = u16_at(msg, 6)?;
    let ns = u16_at(msg, 8)?;
    let mut i = 12;
    for _ in 0..qd {
        let (_, next) = read_name(msg, i)?;
        i = next + 4;
    }
    let mut answers = Vec::new();
    for _ in 0..an {
        let (name, next) = read_name(msg, i)?;
        let rtype = u16_at(msg, next)?;
        let rdlen = usize::from(u16_at(msg, next + 8)?);
        let rd = next + 10;
        let rdata = msg.get(rd..rd + rdlen).ok_or(WireError::Malformed)?;
        let data = match rtype {
            TYPE_A if rdlen == 4 => {
                Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]).to_string()
            }
            TYPE_CNAME | TYPE_PTR | TYPE_NS => read_name(msg, rd)?.0,
            TYPE_SRV => format!(
                "{} {} {} {}",
                u16_at(msg, rd)?,
                u16_at(msg, rd + 2)?,
                u16_at(msg, rd + 4)?,
                read_name(msg, rd + 6)?.0
            ),
            _ => format!("{rdata:?}"),
        };
        answers.push(Answer { name, rtype, data });
        i = rd + rdlen;
    }
    Ok(Decoded {
        id: u16_at(msg, 0)?,
        rcode: (flags & 0x0f) as u8,
        tc: flags & 0x0200 != 0,
        aa: flags & 0x0400 != 0,
        answers,
        authority: usize::from(ns),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_roundtrip() {
        let q = build_query(7, "Web.Default.svc.cluster.local", TYPE_A);
        let p = parse_query(&q).unwrap();
        assert_eq!(p.id, 7);
        assert!(p.rd);
        assert_eq!(p.name, "web.default.svc.cluster.local");
        assert_eq!(p.qtype, TYPE_A);
        let resp = Response {
            authoritative: true,
            answers: vec![Record {
                name: None,
                ttl: 5,
                data: RData::A("10.43.0.5".parse().unwrap()),
            }],
            ..Default::default()
        };
        let d = decode_response(&encode(&p, &resp, 512)).unwrap();
        assert_eq!(d.id, 7);
        assert!(d.aa);
        // the owner name keeps the query's case (compression pointer)
        assert_eq!(d.answers[0].name, "Web.Default.svc.cluster.local");
        assert_eq!(d.answers[0].data, "10.43.0.5");
    }

    #[test]
    fn malformed_are_rejected() {
        assert_eq!(parse_query(&[1, 2, 3]), Err(WireError::Malformed));
        let mut q = build_query(1, "a.b", TYPE_A);
        q.push(0); // trailing garbage
        assert_eq!(parse_query(&q), Err(WireError::Malformed));
        let mut q = build_query(1, "a.b", TYPE_A);
        q[12] = 0xc0; // compression pointer in the question
        assert_eq!(parse_query(&q), Err(WireError::Malformed));
        let mut q = build_query(1, "a.b", TYPE_A);
        q[2] |= 0x80; // a response
        assert_eq!(parse_query(&q), Err(WireError::NotAQuery));
        let mut q = build_query(1, "a.b", TYPE_A);
        q.truncate(q.len() - 1);
        assert_eq!(parse_query(&q), Err(WireError::Malformed));
    }

    #[test]
    fn truncation_sets_tc() {
        let p_bytes = build_query(9, "x.cluster.local", TYPE_A);
        let p = parse_query(&p_bytes).unwrap();
        let answers = (0..100)
            .map(|i| Record {
                name: None,
                ttl: 5,
                data: RData::A(Ipv4Addr::new(10, 42, 0, i)),
            })
            .collect();
        let resp = Response {
            answers,
            ..Default::default()
        };
        let d = decode_response(&encode(&p, &resp, 512)).unwrap();
        assert!(d.tc);
        assert!(d.answers.is_empty());
        let d = decode_response(&encode(&p, &resp, 65535)).unwrap();
        assert_eq!(d.answers.len(), 100);
    }

    #[test]
    fn edns_is_parsed_and_echoed() {
        let mut q = build_query(3, "a.b", TYPE_A);
        q[11] = 1; // ARCOUNT
        q.extend_from_slice(&[0, 0, 41, 0x10, 0x00, 0, 0, 0, 0, 0, 0]);
        let p = parse_query(&q).unwrap();
        assert_eq!(p.edns_size, Some(4096));
        let out = error_response(&p, RCODE_NXDOMAIN);
        assert_eq!(u16::from_be_bytes([out[10], out[11]]), 1);
        assert_eq!(decode_response(&out).unwrap().rcode, RCODE_NXDOMAIN);
    }
}
