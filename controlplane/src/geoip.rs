//! Node countries from their public IP: a MaxMind-format country database (GeoIP2 or
//! GeoLite2 Country, or anything with the same layout) read with the `maxminddb` crate.

#[doc(hidden)]
pub mod writer;

use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;
use turbo_proto::params::CountryCode;

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GeoIpError {
    /// The file could not be read or is not a MaxMind database.
    #[error("{0}")]
    Open(#[from] maxminddb::MaxMindDbError),
}

/// An open country database.
pub struct GeoIp {
    reader: maxminddb::Reader<Vec<u8>>,
}

#[derive(Deserialize)]
struct Iso<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow)]
    country: Option<Iso<'a>>,
    #[serde(borrow)]
    registered_country: Option<Iso<'a>>,
}

impl GeoIp {
    /// Opens `path` (read into memory once).
    ///
    /// # Errors
    /// [`GeoIpError::Open`] when the file is missing or malformed.
    pub fn open(path: &Path) -> Result<GeoIp, GeoIpError> {
        let reader = maxminddb::Reader::open_readfile(path)?;
        Ok(GeoIp { reader })
    }

    /// The country of `ip`: `country.iso_code`, else `registered_country.iso_code`.
    /// IPv4-mapped IPv6 addresses are looked up as IPv4. `None` when the database has
    /// no answer or a malformed one.
    pub fn country(&self, ip: IpAddr) -> Option<CountryCode> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let found = self.reader.lookup(ip).ok()?;
        let rec: CountryRecord<'_> = found.decode().ok()??;
        let code = rec
            .country
            .and_then(|c| c.iso_code)
            .or_else(|| rec.registered_country.and_then(|c| c.iso_code))?;
        CountryCode::parse(code).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_what_the_writer_wrote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("test.mmdb");
        writer::write_country_db(
            &path,
            &[
                ("127.0.0.2/32".parse().expect("net"), "US"),
                ("127.0.0.3/32".parse().expect("net"), "DE"),
                ("10.0.0.0/8".parse().expect("net"), "FR"),
                ("2001:db8::/32".parse().expect("net"), "JP"),
            ],
        )
        .expect("write");
        let db = GeoIp::open(&path).expect("open");
        let at = |s: &str| db.country(s.parse().expect("ip")).map(|c| c.to_string());
        assert_eq!(at("127.0.0.2").as_deref(), Some("US"));
        assert_eq!(at("127.0.0.3").as_deref(), Some("DE"));
        assert_eq!(at("10.1.2.3").as_deref(), Some("FR"));
        assert_eq!(at("::ffff:10.1.2.3").as_deref(), Some("FR"));
        assert_eq!(at("2001:db8::1").as_deref(), Some("JP"));
        assert_eq!(at("127.0.0.4"), None);
        assert_eq!(at("8.8.8.8"), None);
        assert_eq!(at("2001:db9::1"), None);

        let good = std::fs::read(&path).expect("read");
        std::fs::write(&path, b"not a database").expect("write");
        assert!(GeoIp::open(&path).is_err(), "garbage is an error");
        std::fs::write(&path, &good[..good.len() / 2]).expect("write");
        assert!(GeoIp::open(&path).is_err(), "a truncated file is an error");
        assert!(GeoIp::open(&dir.path().join("missing.mmdb")).is_err());
    }
}
