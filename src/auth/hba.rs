//! `hba_file`: which clients may log in, from where, and how, in PostgreSQL's `pg_hba.conf`
//! format. Behind a proxy the servers see only the proxy's address, so rules about client
//! addresses have to be applied here. The first line that matches a client's connection type,
//! database, user and address decides; none matching refuses it.
//!
//! Supported, as in PostgreSQL 16: connection types `local`, `host`, `hostssl`, `hostnossl`,
//! `hostgssenc` (never matches: GSS encryption is refused) and `hostnogssenc`; databases and
//! users as names, quoted names and comma-separated lists, `all`, `sameuser` and `samerole`
//! (database), `replication` (never matches: replication connections are refused), `+role`
//! (user: the members of a role, directly or through other roles), `/regex` (a regular
//! expression, quoted or not, matched anywhere in the name unless anchored) and `@file` (the
//! names in a file, relative to the including file's directory); `include`,
//! `include_if_exists` and `include_dir` records (see [`super::conf_file`]); addresses as `all`, `samehost`, `samenet`,
//! CIDR, an address and a mask, or a host name (`.suffix` for any name ending so); methods
//! `trust`, `reject`, `scram-sha-256`, `md5`, `password`, `cert` and `peer` (`local` only;
//! `ident` there means `peer`, as in PostgreSQL); a line ending in `\` continues on the next;
//! options `clientcert=verify-ca|verify-full` and `clientname=CN|DN` (on `hostssl` lines) and
//! `map=` (`peer` and `cert` lines: a map of [`super::ident`]). Other methods and other options
//! are refused when the file is read, naming the line.
//!
//! Role membership is the servers' to know, and a client's host name the resolver's:
//! [`Hba::decide`] asks for either (the caller reads the catalog, or looks the address up)
//! only when the walk reaches a line that it decides.

use std::net::IpAddr;
use std::path::Path;

use super::conf_file::{self, At, Pattern, Record, Token};

use crate::net::host_name::{numeric_address, HostName};
use crate::net::interfaces::Interface;

/// How a client connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnType {
    Local,
    Host,
    HostSsl,
    HostNoSsl,
    HostGssEnc,
    HostNoGssEnc,
}

/// One entry of a database or user list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NameMatch {
    All,
    /// Database field: the database named like the user.
    SameUser,
    /// Database field: the database named like a role the user is a member of.
    SameRole,
    /// Database field: replication connections only.
    Replication,
    /// User field: the members of a role (`+role`), directly or through other roles.
    Member(String),
    /// A name the regular expression matches (`/regex`).
    Regex(Pattern),
    Name(String),
}

/// A line's address field.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AddrMatch {
    All,
    /// One of this host's own addresses.
    SameHost,
    /// An address in the network of one of this host's interfaces.
    SameNet,
    /// An address and a mask (a CIDR prefix, or a netmask, contiguous or not).
    Net {
        addr: IpAddr,
        mask: u128,
    },
    /// A host name (`.example.com`: any name ending so), matched against the client's
    /// verified host name.
    Host(String),
}

/// How a matching client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Trust,
    Reject,
    ScramSha256,
    /// SCRAM for a user whose password is stored as a SCRAM verifier, as in PostgreSQL.
    Md5,
    /// The password in clear text (over TLS, or a socket, one hopes).
    Password,
    /// A client certificate naming the user.
    Cert,
    /// The socket peer's operating-system user must be the user (`local` lines).
    Peer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    at: At,
    conn: ConnType,
    databases: Vec<NameMatch>,
    users: Vec<NameMatch>,
    addr: Option<AddrMatch>,
    method: Method,
    clientcert: Option<CertCheck>,
    /// `map=`: the `ident_file` map that pairs system user names with users.
    map: Option<String>,
    clientname: CertName,
}

/// The parsed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hba {
    rules: Vec<Rule>,
}

/// What a rule is matched against.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// `None`: a Unix-domain socket.
    pub addr: Option<IpAddr>,
    pub tls: bool,
    pub user: &'a str,
    pub database: &'a str,
    /// The roles `user` (cut to 63 bytes) is a member of, itself included, read from a
    /// server's catalog (empty when there is no such role); `None` until [`Hba::decide`] asks
    /// for them.
    pub roles: Option<&'a [String]>,
    /// What is known of the client's host name (reverse lookup, then forward confirmation);
    /// `None` until [`Hba::decide`] asks for it.
    pub host_name: Option<&'a HostName>,
}

/// What [`Hba::decide`] needs to know before it can go on: the walk reached a line that it
/// decides, and the caller has not given it yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// `Client::roles` (a `+role` or `samerole` line).
    Roles,
    /// `Client::host_name`, from a reverse lookup (a line with a host name).
    HostName,
    /// The forward lookup confirming `Client::host_name`'s reversed name (it matches a line).
    HostConfirmed,
}

/// The decision for a client: the line and its method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The deciding line.
    pub at: At,
    pub method: Method,
    /// `clientcert=`: a client certificate is required on top of the method.
    pub clientcert: Option<CertCheck>,
    /// `map=` (`peer` and `cert` lines): the `ident_file` map to look the pair up in.
    pub map: Option<String>,
    /// `clientname=`: which name of the client certificate is compared with the user.
    pub clientname: CertName,
}

/// The name of a client certificate that `cert` and `clientcert=verify-full` compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertName {
    /// The subject's common name (`clientname=CN`, the default).
    #[default]
    Cn,
    /// The whole subject in RFC 2253 form (`clientname=DN`).
    Dn,
}

/// What `clientcert=` requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertCheck {
    /// A certificate from `[tls] ca`.
    VerifyCa,
    /// One whose common name is the user.
    VerifyFull,
}

/// The single, unquoted token of a field that is not a list.
fn single<'a>(field: &'a [Token], what: &str) -> Result<&'a str, String> {
    match field {
        [t] => Ok(&t.text),
        _ => Err(format!("{what} cannot be a list")),
    }
}

fn names(field: &[Token], database: bool) -> Result<Vec<NameMatch>, String> {
    field
        .iter()
        .map(|t| {
            // (Quoted or not, as PostgreSQL compiles them.)
            if let Some(re) = t.text.strip_prefix('/') {
                return Ok(NameMatch::Regex(Pattern::new(re)?));
            }
            if t.quoted {
                return Ok(NameMatch::Name(t.text.clone()));
            }
            match t.text.as_str() {
                "all" => Ok(NameMatch::All),
                "sameuser" if database => Ok(NameMatch::SameUser),
                "replication" if database => Ok(NameMatch::Replication),
                "samerole" | "samegroup" if database => Ok(NameMatch::SameRole),
                // (In the database field PostgreSQL reads `+` as part of a plain name.)
                s if s.starts_with('+') && !database => Ok(NameMatch::Member(s[1..].to_owned())),
                "" => Err("an empty name".into()),
                s => Ok(NameMatch::Name(s.to_owned())),
            }
        })
        .collect()
}

/// A netmask in the family of `ip`, as bits (PostgreSQL takes any mask, contiguous or not).
fn netmask(ip: IpAddr, mask: &str) -> Result<u128, String> {
    let m: IpAddr = mask
        .parse()
        .map_err(|_| format!("invalid IP mask \"{mask}\""))?;
    match (ip, m) {
        (IpAddr::V4(_), IpAddr::V4(m)) => Ok(u32::from(m) as u128),
        (IpAddr::V6(_), IpAddr::V6(m)) => Ok(u128::from(m)),
        _ => Err(format!("IP address and mask \"{mask}\" do not match")),
    }
}

/// The mask of a CIDR prefix of `prefix` bits in an address of `width` bits.
fn prefix_mask(prefix: u8, width: u32) -> u128 {
    let prefix = u32::from(prefix);
    if prefix == 0 {
        0
    } else {
        (u128::MAX >> (128 - prefix)) << (width - prefix)
    }
}

/// An address with an optional CIDR prefix; `Ok(None)`: not an address, so a host name.
fn parse_cidr(text: &str) -> Result<Option<(IpAddr, u8)>, String> {
    let (ip, prefix) = match text.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (text, None),
    };
    let Some(ip) = numeric_address(ip) else {
        return match prefix {
            None => Ok(None),
            Some(_) => Err(format!(
                "specifying both host name and CIDR mask is invalid: \"{text}\""
            )),
        };
    };
    let width = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= width => n,
            _ => return Err(format!("invalid CIDR mask in address \"{text}\"")),
        },
        None => width,
    };
    Ok(Some((ip, prefix)))
}

/// Whether a line's host name matches the client's: equal, or, for a pattern starting with
/// `.`, a suffix of it; case-insensitively, as PostgreSQL compares them.
fn host_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    if p.first() == Some(&b'.') {
        n.len() >= p.len() && n[n.len() - p.len()..].eq_ignore_ascii_case(p)
    } else {
        n.eq_ignore_ascii_case(p)
    }
}

fn method(name: &str, conn: ConnType) -> Result<Method, String> {
    Ok(match name {
        "trust" => Method::Trust,
        "reject" => Method::Reject,
        "scram-sha-256" => Method::ScramSha256,
        "md5" => Method::Md5,
        "password" => Method::Password,
        "cert" if conn == ConnType::Local => {
            return Err("cert authentication is only supported on hostssl connections".into())
        }
        "cert" => Method::Cert,
        "peer" | "ident" if conn == ConnType::Local => Method::Peer,
        "peer" => {
            return Err("peer authentication is only supported on local sockets".into());
        }
        "gss" | "sspi" | "ident" | "ldap" | "radius" | "pam" | "bsd" => {
            return Err(format!(
                "authentication method \"{name}\" is not supported by switchyard"
            ))
        }
        _ => return Err(format!("invalid authentication method \"{name}\"")),
    })
}

impl Hba {
    /// How many rules it has.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether it has none (then every client is refused).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The maps `map=` options name, each with the first line naming it.
    pub fn maps(&self) -> Vec<(&At, &str)> {
        let mut out: Vec<(&At, &str)> = Vec::new();
        for r in &self.rules {
            if let Some(m) = r.map.as_deref() {
                if !out.iter().any(|(_, seen)| *seen == m) {
                    out.push((&r.at, m));
                }
            }
        }
        out
    }

    /// The first line with `cert` or `clientcert`, if any (client certificates must be asked
    /// for).
    pub fn cert_line(&self) -> Option<&At> {
        self.rules
            .iter()
            .find(|r| r.method == Method::Cert || r.clientcert.is_some())
            .map(|r| &r.at)
    }

    /// Reads the file at `path`; the error names the line (1-based; a continued line by its
    /// first; 0 when the file itself cannot be read; for a line of an included file, the
    /// record including it, the message naming the file and line) and what is wrong.
    pub fn read(path: &Path) -> Result<Hba, (usize, String)> {
        Self::from_records(conf_file::read(path)?)
    }

    /// Reads a file's text, with `@file`s relative to the current directory.
    pub fn parse(text: &str) -> Result<Hba, (usize, String)> {
        Self::parse_in(text, Path::new("."))
    }

    /// Reads a file's text, with `@file`s relative to `dir` (the file's directory).
    pub fn parse_in(text: &str, dir: &Path) -> Result<Hba, (usize, String)> {
        Self::from_records(conf_file::parse(text, dir)?)
    }

    fn from_records(records: Vec<Record>) -> Result<Hba, (usize, String)> {
        let rules = records
            .into_iter()
            .map(|r| Self::rule(&r.fields, r.at.clone()).map_err(|m| r.error(m)))
            .collect::<Result<_, _>>()?;
        Ok(Hba { rules })
    }

    /// Whether some line's `+role` or `samerole` may need role membership.
    pub fn uses_roles(&self) -> bool {
        self.rules.iter().any(|r| {
            r.databases.contains(&NameMatch::SameRole)
                || r.users.iter().any(|u| matches!(u, NameMatch::Member(_)))
        })
    }

    fn rule(f: &[Vec<Token>], at: At) -> Result<Rule, String> {
        let conn = match single(&f[0], "the connection type")? {
            "local" => ConnType::Local,
            "host" => ConnType::Host,
            "hostssl" => ConnType::HostSsl,
            "hostnossl" => ConnType::HostNoSsl,
            "hostgssenc" => ConnType::HostGssEnc,
            "hostnogssenc" => ConnType::HostNoGssEnc,
            other => return Err(format!("invalid connection type \"{other}\"")),
        };
        let databases = f
            .get(1)
            .ok_or("end-of-line before database specification")?;
        let databases = names(databases, true)?;
        let users = f.get(2).ok_or("end-of-line before role specification")?;
        let users = names(users, false)?;
        let mut rest = &f[3..];
        let addr = if conn == ConnType::Local {
            None
        } else {
            let field = rest
                .first()
                .ok_or("end-of-line before IP address specification")?;
            let text = single(field, "the IP address")?;
            rest = &rest[1..];
            Some(match (text, field[0].quoted) {
                ("all", false) => AddrMatch::All,
                ("samehost", false) => AddrMatch::SameHost,
                ("samenet", false) => AddrMatch::SameNet,
                _ => match parse_cidr(text)? {
                    // (No netmask field follows a host name.)
                    None => AddrMatch::Host(text.to_owned()),
                    Some((addr, prefix)) => {
                        let mask = if text.contains('/') {
                            prefix_mask(prefix, if addr.is_ipv4() { 32 } else { 128 })
                        } else {
                            let mask = rest
                                .first()
                                .ok_or("end-of-line before netmask specification")?;
                            rest = &rest[1..];
                            netmask(addr, single(mask, "the netmask")?)?
                        };
                        AddrMatch::Net { addr, mask }
                    }
                },
            })
        };
        let m = rest
            .first()
            .ok_or("end-of-line before authentication method")?;
        let method = method(single(m, "the authentication method")?, conn)?;
        let mut clientcert = None;
        let mut map = None;
        let mut clientname = CertName::Cn;
        for opt in &rest[1..] {
            let text = single(opt, "an authentication option")?;
            let Some((name, value)) = text.split_once('=') else {
                return Err(format!(
                    "authentication option not in name=value format: {text}"
                ));
            };
            if name == "map" {
                if !matches!(method, Method::Peer | Method::Cert) {
                    return Err(
                        "authentication option \"map\" is only valid for authentication methods ident, peer, gssapi, sspi, and cert".into(),
                    );
                }
                // (An empty map is none: the names must be equal, as in PostgreSQL.)
                map = Some(value.to_owned()).filter(|m| !m.is_empty());
                continue;
            }
            if name == "clientname" {
                if conn != ConnType::HostSsl {
                    return Err("clientname can only be configured for \"hostssl\" rows".into());
                }
                clientname = match value {
                    "CN" => CertName::Cn,
                    "DN" => CertName::Dn,
                    _ => return Err(format!("invalid value for clientname: \"{value}\"")),
                };
                continue;
            }
            if name != "clientcert" {
                return Err(format!("authentication option \"{name}\" is not supported"));
            }
            if conn != ConnType::HostSsl {
                return Err("clientcert can only be configured for \"hostssl\" rows".into());
            }
            clientcert = Some(match value {
                "verify-full" => CertCheck::VerifyFull,
                "verify-ca" if method == Method::Cert => return Err(
                    "clientcert only accepts \"verify-full\" when using \"cert\" authentication"
                        .into(),
                ),
                "verify-ca" => CertCheck::VerifyCa,
                _ => return Err(format!("invalid value for clientcert: \"{value}\"")),
            });
        }
        if method == Method::Cert && conn != ConnType::HostSsl {
            return Err("cert authentication is only supported on hostssl connections".into());
        }
        Ok(Rule {
            at,
            conn,
            databases,
            users,
            addr,
            method,
            clientcert,
            map,
            clientname,
        })
    }

    /// The first line that matches `c`, as PostgreSQL's `check_hba`. `interfaces` lists
    /// this host's addresses (`samehost`, `samenet`); it is called at most once, and only
    /// when such a line is reached. `Err(needs)` when the walk reaches a line that only the
    /// client's role membership or host name decides, and `c` does not have it yet: ask again
    /// with it.
    pub fn decide(
        &self,
        c: &Client,
        interfaces: &dyn Fn() -> Vec<Interface>,
    ) -> Result<Option<Decision>, Needs> {
        let addr = c.addr.map(unmapped);
        // PostgreSQL cuts the startup packet's names to NAMEDATALEN - 1 bytes first.
        let user = cut(c.user);
        let database = cut(c.database);
        // (A `+role` longer than a name can be is no role's, as in PostgreSQL.)
        let member_of = |role: &[u8]| -> Option<bool> {
            c.roles
                .map(|roles| roles.iter().any(|r| r.as_bytes() == role))
        };
        let mut local: Option<Vec<Interface>> = None;
        for r in &self.rules {
            let conn_ok = match (r.conn, addr) {
                (ConnType::Local, None) => true,
                (ConnType::Local, Some(_)) | (_, None) => false,
                (ConnType::Host | ConnType::HostNoGssEnc, Some(_)) => true,
                (ConnType::HostSsl, Some(_)) => c.tls,
                (ConnType::HostNoSsl, Some(_)) => !c.tls,
                (ConnType::HostGssEnc, Some(_)) => false,
            };
            if !conn_ok {
                continue;
            }
            // The names first, then this host's addresses, then role membership: the
            // cheapest checks decide most lines, and the costly ones are made only for a
            // line that nothing else rules out.
            let db = any3(r.databases.iter().map(|d| match d {
                NameMatch::All => Some(true),
                NameMatch::SameUser => Some(database == user),
                NameMatch::SameRole => member_of(database),
                NameMatch::Replication | NameMatch::Member(_) => Some(false),
                NameMatch::Regex(p) => Some(p.is_match(database)),
                NameMatch::Name(n) => Some(n.as_bytes() == database),
            }));
            let role = any3(r.users.iter().map(|u| match u {
                NameMatch::Name(n) => Some(n.as_bytes() == user),
                NameMatch::Member(role) => member_of(role.as_bytes()),
                NameMatch::Regex(p) => Some(p.is_match(user)),
                NameMatch::All => Some(true),
                // (Keywords of the database field only.)
                NameMatch::SameUser | NameMatch::SameRole | NameMatch::Replication => Some(false),
            }));
            if db == Some(false) || role == Some(false) {
                continue;
            }
            let addr_ok = match (r.addr.as_ref(), addr) {
                (None, _) | (Some(AddrMatch::All), _) => true,
                (Some(&AddrMatch::Net { addr: net, mask }), Some(ip)) => in_net(ip, net, mask),
                (Some(m @ (AddrMatch::SameHost | AddrMatch::SameNet)), Some(ip)) => {
                    let local = local.get_or_insert_with(interfaces);
                    local.iter().any(|i| match m {
                        AddrMatch::SameHost => unmapped(i.addr) == ip,
                        _ => in_net(ip, unmapped(i.addr), mask_bits(i.mask)),
                    })
                }
                // (A forward lookup only for a name that matches, as in PostgreSQL; a name
                // it did not confirm matches no line.)
                (Some(AddrMatch::Host(pattern)), Some(_)) => match c.host_name {
                    None => return Err(Needs::HostName),
                    Some(HostName::Reversed(n)) if host_matches(pattern, n) => {
                        return Err(Needs::HostConfirmed)
                    }
                    Some(HostName::Verified(n)) => host_matches(pattern, n),
                    Some(_) => false,
                },
                (Some(_), None) => false,
            };
            if !addr_ok {
                continue;
            }
            if db.is_none() || role.is_none() {
                return Err(Needs::Roles);
            }
            return Ok(Some(Decision {
                at: r.at.clone(),
                method: r.method,
                clientcert: r.clientcert,
                map: r.map.clone(),
                clientname: r.clientname,
            }));
        }
        Ok(None)
    }
}

/// A name as PostgreSQL compares it: cut to NAMEDATALEN - 1 bytes.
pub fn cut(s: &str) -> &[u8] {
    &s.as_bytes()[..s.len().min(63)]
}

/// Whether any entry of a list matches, where an entry may not be known yet (`None`): true
/// when one is known to, false when all are known not to, unknown otherwise.
fn any3(entries: impl Iterator<Item = Option<bool>>) -> Option<bool> {
    let mut unknown = false;
    for e in entries {
        match e {
            Some(true) => return Some(true),
            Some(false) => {}
            None => unknown = true,
        }
    }
    if unknown {
        None
    } else {
        Some(false)
    }
}

/// A netmask as bits (for [`in_net`]).
fn mask_bits(mask: IpAddr) -> u128 {
    match mask {
        IpAddr::V4(m) => u32::from(m) as u128,
        IpAddr::V6(m) => u128::from(m),
    }
}

/// An IPv4 client on a dual-stack socket arrives as `::ffff:a.b.c.d`: its IPv4 address.
pub fn unmapped(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is in the network of `net` under `mask` (families must agree, as in
/// PostgreSQL).
fn in_net(ip: IpAddr, net: IpAddr, mask: u128) -> bool {
    let (a, b) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b)),
        _ => return false,
    };
    (a ^ b) & mask == 0
}

#[cfg(test)]
#[path = "hba_tests.rs"]
mod tests;
