//! `hba_file`: which clients may log in, from where, and how, in PostgreSQL's `pg_hba.conf`
//! format. Behind a proxy the servers see only the proxy's address, so rules about client
//! addresses have to be applied here. The first line that matches a client's connection type,
//! database, user and address decides; none matching refuses it.
//!
//! Supported: connection types `local`, `host`, `hostssl`, `hostnossl`, `hostgssenc` (never
//! matches: GSS encryption is refused) and `hostnogssenc`; databases and users as names,
//! quoted names and comma-separated lists, `all`, `sameuser` and `samerole` (database),
//! `replication` (never matches: replication connections are refused), `+role` (user: the
//! members of a role, directly or through other roles) and `@file` (the names in a file,
//! relative to the including file's directory); addresses as `all`, `samehost`, `samenet`,
//! CIDR, an address and a mask, or a host name (`.suffix` for any name ending so); methods `trust`, `reject`, `scram-sha-256`, `md5`,
//! `password`, `cert` and `peer` (`local` only; `ident` there means `peer`, as in
//! PostgreSQL); a line ending in `\` continues on the next; options `clientcert=verify-ca|
//! verify-full` and `clientname=CN|DN` (on `hostssl` lines) and `map=` (`peer` and `cert` lines: a map of
//! [`super::ident`]). Other methods and other options are refused when the file is read,
//! naming the line.
//!
//! Role membership is the servers' to know, and a client's host name the resolver's:
//! [`Hba::decide`] asks for either (the caller reads the catalog, or looks the address up)
//! only when the walk reaches a line that it decides.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::net::host_name::{numeric_address, HostName};
use crate::net::interfaces::Interface;

/// How deep `@file` inclusions may nest (a file including itself is refused, not followed).
const MAX_INCLUDE_DEPTH: usize = 10;

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
    line: usize,
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
    pub line: usize,
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

/// One token of a field, and whether it starts with a double quote (then it is never a
/// keyword, `@file` or `+role`; `al"l"` is the keyword, as in PostgreSQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    pub(super) text: String,
    pub(super) quoted: bool,
}

/// Splits a line into fields, each a list of comma-separated tokens, as PostgreSQL does:
/// whitespace separates fields, a comma continues the list (whitespace may follow it), double
/// quotes keep whitespace, commas and `#` (`""` inside quotes is one `"`), `#` outside quotes
/// starts a comment.
pub(super) fn fields(line: &str) -> Result<Vec<Vec<Token>>, String> {
    let mut out: Vec<Vec<Token>> = Vec::new();
    let mut chars = line.chars().peekable();
    let mut list: Vec<Token> = Vec::new();
    loop {
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            None | Some('#') => break,
            _ => {}
        }
        let mut tok = Token {
            text: String::new(),
            quoted: false,
        };
        let mut in_quote = false;
        let mut comma = false;
        let mut first = true;
        while let Some(&c) = chars.peek() {
            if !in_quote && (c.is_ascii_whitespace() || c == '#') {
                break;
            }
            chars.next();
            let at_start = std::mem::replace(&mut first, false);
            match c {
                ',' if !in_quote => {
                    comma = true;
                    break;
                }
                '"' if in_quote && chars.peek() == Some(&'"') => {
                    chars.next();
                    tok.text.push('"');
                }
                '"' => {
                    in_quote = !in_quote;
                    tok.quoted |= at_start;
                }
                c => tok.text.push(c),
            }
        }
        if in_quote {
            return Err("unterminated quoted string".into());
        }
        list.push(tok);
        if !comma {
            out.push(std::mem::take(&mut list));
        }
    }
    if !list.is_empty() {
        return Err("a list ends with a comma".into());
    }
    Ok(out)
}

/// The file's lines as PostgreSQL reads them, each with its (1-based) number: a backslash at
/// the very end joins the next line, comments and quotes included.
pub(super) fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, first)) = lines.next() {
        let mut line = first.to_owned();
        while line.ends_with('\\') {
            line.pop();
            match lines.next() {
                Some((_, more)) => line.push_str(more),
                None => break,
            }
        }
        out.push((i + 1, line));
    }
    out
}

/// A database or user field with each unquoted `@file` replaced by the names in that file.
fn expand(field: &[Token], dir: &Path, depth: usize) -> Result<Vec<Token>, String> {
    let mut out = Vec::with_capacity(field.len());
    for t in field {
        match t.text.strip_prefix('@') {
            Some(name) if !t.quoted && !name.is_empty() => {
                out.extend(included(&dir.join(name), depth + 1)?);
            }
            _ => out.push(t.clone()),
        }
    }
    Ok(out)
}

/// The names in an `@file`, as PostgreSQL reads one: every token of every line, separated by
/// whitespace or commas, quoted or not, `#` comments; its own `@file`s relative to its
/// directory.
fn included(path: &Path, depth: usize) -> Result<Vec<Token>, String> {
    if depth > MAX_INCLUDE_DEPTH {
        return Err(format!(
            "@{}: more than {MAX_INCLUDE_DEPTH} nested @file inclusions",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("could not open file \"{}\": {e}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (n, line) in logical_lines(&text) {
        let f = fields(&line).map_err(|m| format!("{}:{n}: {m}", path.display()))?;
        for field in f {
            out.extend(expand(&field, dir, depth)?);
        }
    }
    Ok(out)
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
            if t.quoted {
                return Ok(NameMatch::Name(t.text.clone()));
            }
            match t.text.as_str() {
                "all" => Ok(NameMatch::All),
                "sameuser" if database => Ok(NameMatch::SameUser),
                "replication" if database => Ok(NameMatch::Replication),
                "samerole" | "samegroup" if database => Ok(NameMatch::SameRole),
                // (In the database field PostgreSQL 15 reads `+` and `/` as plain names.)
                s if s.starts_with('+') && !database => Ok(NameMatch::Member(s[1..].to_owned())),
                s if s.starts_with('/') && !database => {
                    Err(format!("\"{s}\": regular expressions are not supported"))
                }
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
    pub fn maps(&self) -> Vec<(usize, &str)> {
        let mut out: Vec<(usize, &str)> = Vec::new();
        for r in &self.rules {
            if let Some(m) = r.map.as_deref() {
                if !out.iter().any(|(_, seen)| *seen == m) {
                    out.push((r.line, m));
                }
            }
        }
        out
    }

    /// The first line with `cert` or `clientcert`, if any (client certificates must be asked
    /// for).
    pub fn cert_line(&self) -> Option<usize> {
        self.rules
            .iter()
            .find(|r| r.method == Method::Cert || r.clientcert.is_some())
            .map(|r| r.line)
    }

    /// Reads the file at `path`; the error names the line (1-based; a continued line by its
    /// first; 0 when the file itself cannot be read) and what is wrong.
    pub fn read(path: &Path) -> Result<Hba, (usize, String)> {
        let text = std::fs::read_to_string(path).map_err(|e| (0, e.to_string()))?;
        let dir = path.parent().map_or(PathBuf::from("."), Path::to_path_buf);
        Self::parse_in(&text, &dir)
    }

    /// Reads a file's text, with `@file`s relative to the current directory.
    pub fn parse(text: &str) -> Result<Hba, (usize, String)> {
        Self::parse_in(text, Path::new("."))
    }

    /// Reads a file's text, with `@file`s relative to `dir` (the file's directory).
    pub fn parse_in(text: &str, dir: &Path) -> Result<Hba, (usize, String)> {
        let mut rules = Vec::new();
        for (n, line) in logical_lines(text) {
            let f = fields(&line).map_err(|m| (n, m))?;
            if f.is_empty() {
                continue;
            }
            rules.push(Self::rule(n, &f, dir).map_err(|m| (n, m))?);
        }
        Ok(Hba { rules })
    }

    /// Whether some line's `+role` or `samerole` may need role membership.
    pub fn uses_roles(&self) -> bool {
        self.rules.iter().any(|r| {
            r.databases.contains(&NameMatch::SameRole)
                || r.users.iter().any(|u| matches!(u, NameMatch::Member(_)))
        })
    }

    fn rule(line: usize, f: &[Vec<Token>], dir: &Path) -> Result<Rule, String> {
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
        let databases = names(&expand(databases, dir, 0)?, true)?;
        let users = f.get(2).ok_or("end-of-line before role specification")?;
        let users = names(&expand(users, dir, 0)?, false)?;
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
            line,
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
                NameMatch::Name(n) => Some(n.as_bytes() == database),
            }));
            let role = any3(r.users.iter().map(|u| match u {
                NameMatch::Name(n) => Some(n.as_bytes() == user),
                NameMatch::Member(role) => member_of(role.as_bytes()),
                _ => Some(true),
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
                line: r.line,
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
mod tests {
    use super::*;

    fn client<'a>(addr: Option<&str>, tls: bool, user: &'a str, database: &'a str) -> Client<'a> {
        Client {
            addr: addr.map(|a| a.parse().unwrap()),
            tls,
            user,
            database,
            roles: None,
            host_name: None,
        }
    }

    /// The decision, on a host whose only interface is 10.1.2.3/16.
    fn decide(hba: &Hba, c: Client) -> Option<(usize, Method)> {
        let local = || {
            vec![Interface {
                addr: "10.1.2.3".parse().unwrap(),
                mask: "255.255.0.0".parse().unwrap(),
            }]
        };
        hba.decide(&c, &local)
            .expect("no line needs roles")
            .map(|d| (d.line, d.method))
    }

    #[test]
    fn the_first_matching_line_decides() {
        let hba = Hba::parse(
            "# TYPE DATABASE USER ADDRESS METHOD\n\
             local   all      postgres            peer\n\
             local   all      all                 trust   # sockets\n\
             hostssl app      all  0.0.0.0/0      cert\n\
             host    app,\"Big DB\" app,report 10.1.0.0/16  scram-sha-256\n\
             host    sameuser all  10.2.3.4 255.255.255.255 md5\n\
             host    all      evil all            reject\n\
             hostnossl all    all  ::1/128        password\n\
             host    all      all  ::/0           reject\n",
        )
        .unwrap();
        assert_eq!(
            decide(&hba, client(None, false, "postgres", "x")),
            Some((2, Method::Peer))
        );
        assert_eq!(
            decide(&hba, client(None, false, "app", "x")),
            Some((3, Method::Trust))
        );
        assert_eq!(
            decide(&hba, client(Some("10.9.9.9"), true, "app", "app")),
            Some((4, Method::Cert))
        );
        assert_eq!(
            decide(&hba, client(Some("10.1.200.3"), false, "report", "Big DB")),
            Some((5, Method::ScramSha256))
        );
        // Not in the list, not in the network.
        assert_eq!(
            decide(&hba, client(Some("10.1.0.1"), false, "other", "app")),
            None
        );
        assert_eq!(
            decide(&hba, client(Some("10.3.0.1"), false, "app", "app")),
            None
        );
        // sameuser, and an address with a separate mask.
        assert_eq!(
            decide(&hba, client(Some("10.2.3.4"), false, "bob", "bob")),
            Some((6, Method::Md5))
        );
        assert_eq!(
            decide(&hba, client(Some("10.2.3.5"), false, "bob", "bob")),
            None
        );
        assert_eq!(
            decide(&hba, client(Some("192.0.2.1"), false, "evil", "bob")),
            Some((7, Method::Reject))
        );
        // hostnossl does not take TLS clients; IPv4 rules do not take IPv6 clients.
        assert_eq!(
            decide(&hba, client(Some("::1"), false, "a", "b")),
            Some((8, Method::Password))
        );
        assert_eq!(
            decide(&hba, client(Some("::1"), true, "a", "b")),
            Some((9, Method::Reject))
        );
        // An IPv4 client seen on a dual-stack socket is matched as IPv4.
        assert_eq!(
            decide(&hba, client(Some("::ffff:10.1.2.3"), false, "app", "app")),
            Some((5, Method::ScramSha256))
        );
    }

    #[test]
    fn quoting_keeps_keywords_as_names() {
        let hba =
            Hba::parse("host \"all\" \"a,b\"\"c\" all trust\nhost all all all reject\n").unwrap();
        assert_eq!(
            decide(&hba, client(Some("1.2.3.4"), false, "a,b\"c", "all")),
            Some((1, Method::Trust))
        );
        assert_eq!(
            decide(&hba, client(Some("1.2.3.4"), false, "a,b\"c", "other")),
            Some((2, Method::Reject))
        );
        // Whitespace after a comma continues the list.
        let hba = Hba::parse("local a, b all trust").unwrap();
        assert_eq!(
            decide(&hba, client(None, false, "u", "b")),
            Some((1, Method::Trust))
        );
    }

    #[test]
    fn connection_kinds_that_never_happen_never_match() {
        let hba = Hba::parse(
            "hostgssenc all all all trust\nlocal replication all trust\nhostnogssenc all all all md5\n",
        )
        .unwrap();
        assert_eq!(
            decide(&hba, client(Some("1.2.3.4"), true, "u", "d")),
            Some((3, Method::Md5))
        );
        assert_eq!(decide(&hba, client(None, false, "u", "replication")), None);
    }

    #[test]
    fn files_postgresql_reads_read_the_same() {
        // A backslash at the end joins lines, even in a comment (the rule below it is part of
        // the comment); errors name the first line of a joined one.
        let hba = Hba::parse(
            "# old office \\\nhost all all 0.0.0.0/0 trust\n\
             host app \\\n  all 10.0.0.0/8 md5\n\
             local all all ident\n\
             host +ops,/data all 10.0.0.0 255.0.255.0 password\n",
        )
        .unwrap();
        assert_eq!(hba.len(), 3);
        assert_eq!(decide(&hba, client(Some("1.2.3.4"), false, "u", "x")), None);
        assert_eq!(
            decide(&hba, client(Some("10.9.9.9"), false, "u", "app")),
            Some((3, Method::Md5))
        );
        // ident on a socket is peer.
        assert_eq!(
            decide(&hba, client(None, false, "u", "x")),
            Some((5, Method::Peer))
        );
        // + and / start plain database names in PostgreSQL 15; masks need not be contiguous.
        assert_eq!(
            decide(&hba, client(Some("10.7.0.200"), false, "u", "+ops")),
            Some((6, Method::Password))
        );
        assert_eq!(
            decide(&hba, client(Some("10.99.0.5"), false, "u", "/data")),
            Some((6, Method::Password))
        );
        assert_eq!(
            decide(&hba, client(Some("11.7.0.200"), false, "u", "+ops")),
            None
        );
        let e =
            Hba::parse("local all all trust\nhost \\\nall all 10.0.0.0/33 trust\n").unwrap_err();
        assert_eq!(e.0, 2, "{e:?}");

        // Names are cut to 63 bytes before they are compared, as PostgreSQL cuts them.
        let long = "r".repeat(63);
        let hba = Hba::parse(&format!(
            "host all {long} all reject\nhost all all all md5\n"
        ))
        .unwrap();
        let longer = format!("{long}x");
        assert_eq!(
            decide(&hba, client(Some("1.2.3.4"), false, &longer, "d")),
            Some((1, Method::Reject))
        );
    }

    #[test]
    fn role_membership_is_asked_for_only_when_a_line_needs_it() {
        let hba = Hba::parse(
            "local all      postgres     peer\n\
             host  all      +admins,bob  10.0.0.0/8  trust\n\
             host  samerole all          all         md5\n\
             host  all      \"+ops\"     all         password\n\
             host  all      all          all         reject\n",
        )
        .unwrap();
        assert!(hba.uses_roles());
        assert!(!Hba::parse("host all \"+ops\" all trust")
            .unwrap()
            .uses_roles());
        let none = || -> Vec<Interface> { panic!("no samehost/samenet line") };
        let walk = |addr: &str, user: &str, db: &str, roles: Option<&[String]>| {
            let mut c = client(Some(addr), false, user, db);
            c.roles = roles;
            hba.decide(&c, &none).map(|d| d.map(|d| (d.line, d.method)))
        };
        // Decided before any line that needs roles, or by a name on the line that does.
        assert_eq!(
            hba.decide(&client(None, false, "postgres", "x"), &none),
            Ok(Some(Decision {
                line: 1,
                method: Method::Peer,
                clientcert: None,
                map: None,
                clientname: CertName::Cn,
            }))
        );
        assert_eq!(
            walk("10.0.0.1", "bob", "x", None),
            Ok(Some((2, Method::Trust)))
        );
        // Reached a line only membership decides.
        assert_eq!(walk("10.0.0.1", "alice", "x", None), Err(Needs::Roles));
        assert_eq!(walk("192.0.2.1", "alice", "x", None), Err(Needs::Roles));
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // A member of admins (through another role: the reader lists every role).
        let alice = roles(&["alice", "dba", "admins"]);
        assert_eq!(
            walk("10.0.0.1", "alice", "x", Some(&alice)),
            Ok(Some((2, Method::Trust)))
        );
        // Not from that network: samerole, the database named like one of her roles.
        assert_eq!(
            walk("192.0.2.1", "alice", "dba", Some(&alice)),
            Ok(Some((3, Method::Md5)))
        );
        assert_eq!(
            walk("192.0.2.1", "alice", "other", Some(&alice)),
            Ok(Some((5, Method::Reject)))
        );
        // `+"hba_x"` is the members of hba_x (only a leading quote makes a name); an empty
        // map is none.
        let partly = Hba::parse("host all +\"ops\",al\"l\" all trust").unwrap();
        let mut c = client(Some("1.2.3.4"), false, "carol", "d");
        c.roles = Some(&[]);
        assert_eq!(partly.decide(&c, &none).unwrap().unwrap().line, 1);
        assert!(Hba::parse("local all all peer map=")
            .unwrap()
            .maps()
            .is_empty());
        let partly = Hba::parse("host all +\"ops\" all trust").unwrap();
        let carol_roles = roles(&["carol", "ops"]);
        c.roles = Some(&carol_roles);
        assert_eq!(partly.decide(&c, &none).unwrap().unwrap().line, 1);
        c.roles = Some(&[]);
        assert_eq!(partly.decide(&c, &none), Ok(None));
        // A quoted "+ops" is a role named so, not the members of ops.
        let carol = roles(&["carol", "ops"]);
        assert_eq!(
            walk("192.0.2.1", "carol", "x", Some(&carol)),
            Ok(Some((5, Method::Reject)))
        );
        assert_eq!(
            walk("192.0.2.1", "+ops", "x", Some(&roles(&["+ops"]))),
            Ok(Some((4, Method::Password)))
        );
        // A role that does not exist is a member of nothing.
        assert_eq!(
            walk("10.0.0.1", "ghost", "ghost", Some(&[])),
            Ok(Some((5, Method::Reject)))
        );
    }

    #[test]
    fn host_names_match_the_clients_verified_name_when_a_line_needs_it() {
        let hba = Hba::parse(
            "host all a 10.0.0.0/8 trust\n\
             host all all DB1.example.com md5\n\
             host all all .example.org password\n\
             host all all all reject\n",
        )
        .unwrap();
        let none = || -> Vec<Interface> { panic!("no samehost/samenet line") };
        let walk = |user: &str, name: Option<HostName>| {
            let mut c = client(Some("10.1.2.3"), false, user, "d");
            c.host_name = name.as_ref();
            hba.decide(&c, &none).map(|d| d.map(|d| (d.line, d.method)))
        };
        let verified = |n: &str| Some(HostName::Verified(n.into()));
        // Decided before the first host-name line: no lookup.
        assert_eq!(walk("a", None), Ok(Some((1, Method::Trust))));
        assert_eq!(walk("b", None), Err(Needs::HostName));
        // A reversed name that matches a line is confirmed first; one that matches none is
        // not looked up forward at all.
        assert_eq!(
            walk("b", Some(HostName::Reversed("db1.example.com".into()))),
            Err(Needs::HostConfirmed)
        );
        assert_eq!(
            walk("b", Some(HostName::Reversed("other.net".into()))),
            Ok(Some((4, Method::Reject)))
        );
        // Case-insensitive; a leading dot matches any name ending so, not the bare domain.
        assert_eq!(
            walk("b", verified("db1.EXAMPLE.com")),
            Ok(Some((2, Method::Md5)))
        );
        assert_eq!(
            walk("b", verified("web.eu.example.org")),
            Ok(Some((3, Method::Password)))
        );
        assert_eq!(
            walk("b", verified("example.org")),
            Ok(Some((4, Method::Reject)))
        );
        assert_eq!(
            walk("b", verified("xdb1.example.com")),
            Ok(Some((4, Method::Reject)))
        );
        // A name the forward lookup did not confirm, or none: no host-name line matches.
        assert_eq!(
            walk("b", Some(HostName::Unconfirmed("db1.example.com".into()))),
            Ok(Some((4, Method::Reject)))
        );
        assert_eq!(
            walk("b", Some(HostName::Unknown("timed out".into()))),
            Ok(Some((4, Method::Reject)))
        );
        // Sockets never reach host-name lines.
        assert_eq!(hba.decide(&client(None, false, "b", "d"), &none), Ok(None));
    }

    #[test]
    fn samehost_and_samenet_are_this_hosts_addresses_and_networks() {
        let hba = Hba::parse(
            "host all a samehost trust\nhost all a samenet md5\nhost all all all reject\n",
        )
        .unwrap();
        // The host of `decide` above: 10.1.2.3/16.
        assert_eq!(
            decide(&hba, client(Some("10.1.2.3"), false, "a", "d")),
            Some((1, Method::Trust))
        );
        assert_eq!(
            decide(&hba, client(Some("::ffff:10.1.2.3"), false, "a", "d")),
            Some((1, Method::Trust))
        );
        assert_eq!(
            decide(&hba, client(Some("10.1.200.9"), false, "a", "d")),
            Some((2, Method::Md5))
        );
        assert_eq!(
            decide(&hba, client(Some("10.2.0.1"), false, "a", "d")),
            Some((3, Method::Reject))
        );
        assert_eq!(
            decide(&hba, client(Some("::1"), false, "a", "d")),
            Some((3, Method::Reject))
        );
        // The addresses are read once per walk, and only when such a line is reached.
        let reads = std::cell::Cell::new(0);
        let counted = || {
            reads.set(reads.get() + 1);
            Vec::new()
        };
        let c = client(Some("10.9.9.9"), false, "a", "d");
        assert_eq!(hba.decide(&c, &counted).unwrap().unwrap().line, 3);
        assert_eq!(reads.get(), 1);
        let b = client(Some("10.9.9.9"), false, "b", "d");
        assert_eq!(hba.decide(&b, &counted).unwrap().unwrap().line, 3);
        assert_eq!(reads.get(), 1);
        assert_eq!(
            hba.decide(&client(None, false, "a", "d"), &counted),
            Ok(None)
        );
        assert_eq!(reads.get(), 1);
    }

    #[test]
    fn at_file_lists_the_names_in_a_file_beside_the_including_one() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("lists");
        std::fs::create_dir(&sub).unwrap();
        // Names over several lines, separated by commas or whitespace, quoted, commented,
        // and a nested @file relative to the including file.
        std::fs::write(
            sub.join("users"),
            "alice, bob # the first two\n  \"Carol M\"\n@more\n",
        )
        .unwrap();
        std::fs::write(sub.join("more"), "dave\n").unwrap();
        std::fs::write(dir.path().join("dbs"), "app\nsameuser\n").unwrap();
        std::fs::write(dir.path().join("empty"), "# nobody\n").unwrap();
        let path = dir.path().join("hba.conf");
        std::fs::write(
            &path,
            "host @dbs @lists/users all trust\n\
             host all @empty,\"@dbs\" all md5\n\
             host all all all reject\n",
        )
        .unwrap();
        let hba = Hba::read(&path).unwrap();
        for user in ["alice", "bob", "Carol M", "dave"] {
            assert_eq!(
                decide(&hba, client(Some("1.2.3.4"), false, user, "app")),
                Some((1, Method::Trust)),
                "{user}"
            );
        }
        // sameuser in an included file is the keyword.
        assert_eq!(
            decide(&hba, client(Some("1.2.3.4"), false, "dave", "dave")),
            Some((1, Method::Trust))
        );
        assert_eq!(
            decide(&hba, client(Some("1.2.3.4"), false, "eve", "app")),
            Some((3, Method::Reject))
        );
        // A quoted "@dbs" is a name.
        assert_eq!(
            decide(&hba, client(Some("1.2.3.4"), false, "@dbs", "x")),
            Some((2, Method::Md5))
        );
        // Only a leading quote makes a name of `@`: `@"dbs"` includes the file.
        std::fs::write(&path, "host @\"dbs\" all all trust\n").unwrap();
        let hba = Hba::read(&path).unwrap();
        assert_eq!(
            decide(&hba, client(Some("1.2.3.4"), false, "u", "app")),
            Some((1, Method::Trust))
        );
        // A missing file, and a file including itself, are errors naming the line.
        std::fs::write(&path, "local all all trust\nhost all @nope all trust\n").unwrap();
        let (line, msg) = Hba::read(&path).unwrap_err();
        assert_eq!(line, 2);
        assert!(
            msg.contains("could not open file") && msg.contains("nope"),
            "{msg}"
        );
        std::fs::write(dir.path().join("loop"), "x @loop\n").unwrap();
        std::fs::write(&path, "host all @loop all trust\n").unwrap();
        let (line, msg) = Hba::read(&path).unwrap_err();
        assert_eq!(line, 1);
        assert!(msg.contains("nested @file"), "{msg}");
        // An error inside an included file names that file's line.
        std::fs::write(dir.path().join("bad"), "ok\n\"unterminated\n").unwrap();
        std::fs::write(&path, "host all @bad all trust\n").unwrap();
        let (_, msg) = Hba::read(&path).unwrap_err();
        assert!(msg.contains("bad:2: unterminated quoted string"), "{msg}");
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let cases = [
            ("hots all all all trust", "invalid connection type \"hots\""),
            ("host all", "end-of-line before role specification"),
            (
                "host all all",
                "end-of-line before IP address specification",
            ),
            (
                "host all all 10.0.0.0/8",
                "end-of-line before authentication method",
            ),
            ("host all all 10.0.0.0/33 trust", "invalid CIDR mask"),
            ("host all all 10.0.0.1 ffff:: trust", "do not match"),
            (
                "host all all db.example.com/24 trust",
                "specifying both host name and CIDR mask is invalid",
            ),
            // As the system reads addresses: 127.1 is one, so a netmask must follow.
            ("host all all 127.1 trust", "invalid IP mask \"trust\""),
            ("host all /^a all trust", "regular expressions"),
            (
                "host @no-such-file all all trust",
                "could not open file \"./no-such-file\"",
            ),
            ("host all all all ldap", "\"ldap\" is not supported"),
            (
                "host all all all trusted",
                "invalid authentication method \"trusted\"",
            ),
            ("host all all all peer", "only supported on local sockets"),
            ("host all all all cert", "only supported on hostssl"),
            (
                "host all all all md5 map=x",
                "\"map\" is only valid for authentication methods",
            ),
            (
                "host all all all md5 include_realm=0",
                "option \"include_realm\" is not supported",
            ),
            (
                "host all all all md5 clientname=DN",
                "clientname can only be configured for \"hostssl\" rows",
            ),
            (
                "hostssl all all all cert clientname=dn",
                "invalid value for clientname: \"dn\"",
            ),
            (
                "host all all all md5 clientcert=verify-ca",
                "only be configured for \"hostssl\"",
            ),
            (
                "hostssl all all all cert clientcert=verify-ca",
                "only accepts \"verify-full\"",
            ),
            (
                "hostssl all all all md5 clientcert=1",
                "invalid value for clientcert: \"1\"",
            ),
            (
                "hostssl all all all md5 clientcert",
                "not in name=value format",
            ),
            ("local \"all all trust", "unterminated quoted string"),
            (
                "local a, all trust",
                "end-of-line before authentication method",
            ),
            ("local a all trust,", "a list ends with a comma"),
            ("local all all trust,md5", "cannot be a list"),
        ];
        for (text, want) in cases {
            let (line, msg) = Hba::parse(&format!("# comment\n\n{text}\n")).unwrap_err();
            assert_eq!(line, 3, "{text}");
            assert!(msg.contains(want), "{text}: {msg}");
        }
    }
}
