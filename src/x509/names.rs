//! Names and values as certificates are usually printed: distinguished names with OpenSSL's
//! short attribute names, general names (`DNS:`, `IP:`, `URI:`, `email:`), hex and dates.

use time::OffsetDateTime;
use x509_parser::der_parser::asn1_rs::{Any, Tag, ToDer};
use x509_parser::der_parser::oid::Oid;
use x509_parser::extensions::GeneralName;
use x509_parser::objects::{oid2sn, oid_registry};
use x509_parser::prelude::X509Name;

use super::NameField;

/// Formats a time as RFC 3339 (`2026-01-03T00:00:00Z`).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lowercase hex bytes separated by colons (`0a:1b:2c`), the form of serials and key ids.
pub fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub(crate) fn oid_name(oid: &Oid<'_>) -> String {
    oid2sn(oid, oid_registry())
        .map(str::to_owned)
        .unwrap_or_else(|_| oid.to_id_string())
}

/// OpenSSL's short names of the attribute types found in real-world names.
pub(crate) fn attribute_name(oid: &Oid<'_>) -> String {
    let dotted = oid.to_id_string();
    let name = match dotted.as_str() {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.13" => "description",
        "2.5.4.15" => "businessCategory",
        "2.5.4.17" => "postalCode",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "2.5.4.97" => "organizationIdentifier",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "1.3.6.1.4.1.311.60.2.1.1" => "jurisdictionL",
        "1.3.6.1.4.1.311.60.2.1.2" => "jurisdictionST",
        "1.3.6.1.4.1.311.60.2.1.3" => "jurisdictionC",
        _ => return dotted,
    };
    name.to_owned()
}

pub(crate) fn name_fields(name: &X509Name<'_>) -> Vec<NameField> {
    name.iter_attributes()
        .map(|attr| NameField {
            attribute: attribute_name(attr.attr_type()),
            value: attribute_value(attr.attr_value()),
        })
        .collect()
}

/// A name as one line, in certificate order: `C=US, O=Org, CN=name`, with ` + ` between the
/// attributes of a multi-valued RDN.
pub(crate) fn name_text(name: &X509Name<'_>, fields: &[NameField]) -> String {
    let mut fields = fields.iter();
    name.iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .filter_map(|_| fields.next())
                .map(|f| format!("{}={}", f.attribute, f.value))
                .collect::<Vec<_>>()
                .join(" + ")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An attribute value as text, decoding each string type the way OpenSSL does (T61String
/// as Latin-1, BMPString as UCS-2, UniversalString as UCS-4); anything else is `#` and the
/// DER in hex.
pub(crate) fn attribute_value(value: &Any<'_>) -> String {
    let data = value.data;
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => String::from_utf8_lossy(data).into_owned(),
        Tag::T61String => data.iter().map(|&b| char::from(b)).collect(),
        Tag::BmpString => {
            let units: Vec<u16> = data
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        Tag::UniversalString => data
            .chunks(4)
            .map(|c| {
                let mut b = [0u8; 4];
                b[..c.len()].copy_from_slice(c);
                char::from_u32(u32::from_be_bytes(b)).unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
        _ => {
            let mut der = Vec::new();
            match value.to_der_vec() {
                Ok(bytes) => der.extend(bytes),
                Err(_) => der.extend_from_slice(data),
            }
            format!("#{}", hex(&der))
        }
    }
}

pub(crate) fn uri(name: &GeneralName<'_>) -> Option<String> {
    match name {
        GeneralName::URI(u) => Some((*u).to_owned()),
        _ => None,
    }
}

/// A general name as OpenSSL's `-text` shows it (`DNS:`, `IP:`, `URI:`, `email:`,
/// `DirName:`).
pub(crate) fn general_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::RFC822Name(e) => format!("email:{e}"),
        GeneralName::DirectoryName(dn) => format!("DirName:{dn}"),
        GeneralName::IPAddress(bytes) => format!("IP:{}", ip_address(bytes)),
        other => format!("{other}"),
    }
}

pub(crate) fn ip_address(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => {
            let a: [u8; 4] = [bytes[0], bytes[1], bytes[2], bytes[3]];
            std::net::Ipv4Addr::from(a).to_string()
        }
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(bytes);
            std::net::Ipv6Addr::from(a).to_string()
        }
        // Name constraints: an address followed by a mask of the same length.
        8 | 32 => {
            let (addr, mask) = bytes.split_at(bytes.len() / 2);
            let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
            let contiguous = mask
                .iter()
                .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
                .skip_while(|bit| *bit == 1)
                .all(|bit| bit == 0);
            if contiguous {
                format!("{}/{ones}", ip_address(addr))
            } else {
                format!("{}/{}", ip_address(addr), ip_address(mask))
            }
        }
        _ => hex(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_addresses() {
        assert_eq!(ip_address(&[10, 0, 0, 0, 255, 0, 0, 0]), "10.0.0.0/8");
        assert_eq!(
            ip_address(&[10, 0, 0, 0, 255, 0, 255, 0]),
            "10.0.0.0/255.0.255.0"
        );
    }
}
