//! `hba_file`: which clients may log in, from where, and how, in PostgreSQL's `pg_hba.conf`
//! format. Behind a proxy the servers see only the proxy's address, so rules about client
//! addresses have to be applied here. The first line that matches a client's connection type,
//! database, user and address decides; none matching refuses it.
//!
//! Supported: connection types `local`, `host`, `hostssl`, `hostnossl`, `hostgssenc` (never
//! matches: GSS encryption is refused) and `hostnogssenc`; databases and users as names,
//! quoted names and comma-separated lists, `all`, `sameuser` (database), `replication` (never
//! matches: replication connections are refused); addresses as `all`, CIDR, or an address and
//! a mask; methods `trust`, `reject`, `scram-sha-256`, `md5`, `password`, `cert` and `peer`
//! (`local` only; `ident` there means `peer`, as in PostgreSQL); a line ending in `\`
//! continues on the next. What would need the servers' catalog or name resolution (`+group`
//! users, `samerole`, `@file`, host names, `samehost`, `samenet`), other methods, and options
//! other than `clientcert=verify-ca|verify-full` (on `hostssl` lines) are refused when the
//! file is read, naming the line.

use std::net::IpAddr;

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
    /// Database field: replication connections only.
    Replication,
    Name(String),
}

/// A line's address field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddrMatch {
    All,
    /// An address and a mask (a CIDR prefix, or a netmask, contiguous or not).
    Net {
        addr: IpAddr,
        mask: u128,
    },
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
}

/// The decision for a client: the line and its method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub line: usize,
    pub method: Method,
    /// `clientcert=`: a client certificate is required on top of the method.
    pub clientcert: Option<CertCheck>,
}

/// What `clientcert=` requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertCheck {
    /// A certificate from `[tls] ca`.
    VerifyCa,
    /// One whose common name is the user.
    VerifyFull,
}

/// One token of a field, and whether any of it was quoted (then it is never a keyword).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    text: String,
    quoted: bool,
}

/// Splits a line into fields, each a list of comma-separated tokens, as PostgreSQL does:
/// whitespace separates fields, a comma continues the list (whitespace may follow it), double
/// quotes keep whitespace, commas and `#` (`""` inside quotes is one `"`), `#` outside quotes
/// starts a comment.
fn fields(line: &str) -> Result<Vec<Vec<Token>>, String> {
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
        while let Some(&c) = chars.peek() {
            if !in_quote && (c.is_ascii_whitespace() || c == '#') {
                break;
            }
            chars.next();
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
                    tok.quoted = true;
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
                "samerole" | "samegroup" if database => Err(format!(
                    "\"{}\" needs role membership, which switchyard does not know",
                    t.text
                )),
                // (In the database field PostgreSQL 15 reads both as plain names.)
                s if s.starts_with('+') && !database => Err(format!(
                    "\"{s}\": group membership (+role) is not supported"
                )),
                s if s.starts_with('@') => {
                    Err(format!("\"{s}\": file inclusion (@file) is not supported"))
                }
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

fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let (ip, prefix) = match text.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (text, None),
    };
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("invalid IP address \"{text}\" (host names are not supported)"))?;
    let width = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= width => n,
            _ => return Err(format!("invalid CIDR mask in address \"{text}\"")),
        },
        None => width,
    };
    Ok((ip, prefix))
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

    /// The first line with `cert` or `clientcert`, if any (client certificates must be asked
    /// for).
    pub fn cert_line(&self) -> Option<usize> {
        self.rules
            .iter()
            .find(|r| r.method == Method::Cert || r.clientcert.is_some())
            .map(|r| r.line)
    }

    /// Reads the file's text; the error names the line (1-based; a continued line by its
    /// first) and what is wrong.
    pub fn parse(text: &str) -> Result<Hba, (usize, String)> {
        let mut rules = Vec::new();
        let mut lines = text.lines().enumerate();
        while let Some((i, first)) = lines.next() {
            let n = i + 1;
            // A backslash at the very end joins the next line, comments and quotes included.
            let mut line = first.to_owned();
            while line.ends_with('\\') {
                line.pop();
                match lines.next() {
                    Some((_, more)) => line.push_str(more),
                    None => break,
                }
            }
            let f = fields(&line).map_err(|m| (n, m))?;
            if f.is_empty() {
                continue;
            }
            rules.push(Self::rule(n, &f).map_err(|m| (n, m))?);
        }
        Ok(Hba { rules })
    }

    fn rule(line: usize, f: &[Vec<Token>]) -> Result<Rule, String> {
        let conn = match single(&f[0], "the connection type")? {
            "local" => ConnType::Local,
            "host" => ConnType::Host,
            "hostssl" => ConnType::HostSsl,
            "hostnossl" => ConnType::HostNoSsl,
            "hostgssenc" => ConnType::HostGssEnc,
            "hostnogssenc" => ConnType::HostNoGssEnc,
            other => return Err(format!("invalid connection type \"{other}\"")),
        };
        let databases = names(
            f.get(1)
                .ok_or("end-of-line before database specification")?,
            true,
        )?;
        let users = names(
            f.get(2).ok_or("end-of-line before role specification")?,
            false,
        )?;
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
                ("samehost" | "samenet", false) => {
                    return Err(format!("\"{text}\" is not supported"));
                }
                _ => {
                    let (addr, prefix) = parse_cidr(text)?;
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
            })
        };
        let m = rest
            .first()
            .ok_or("end-of-line before authentication method")?;
        let method = method(single(m, "the authentication method")?, conn)?;
        let mut clientcert = None;
        for opt in &rest[1..] {
            let text = single(opt, "an authentication option")?;
            let Some((name, value)) = text.split_once('=') else {
                return Err(format!(
                    "authentication option not in name=value format: {text}"
                ));
            };
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
        })
    }

    /// The first line that matches `c`, as PostgreSQL's `check_hba`.
    pub fn decide(&self, c: &Client) -> Option<Decision> {
        let addr = c.addr.map(unmapped);
        // PostgreSQL cuts the startup packet's names to NAMEDATALEN - 1 bytes first.
        let cut = |s: &str| -> Vec<u8> { s.as_bytes()[..s.len().min(63)].to_vec() };
        let (user, database) = (cut(c.user), cut(c.database));
        self.rules
            .iter()
            .find(|r| {
                let conn_ok = match (r.conn, addr) {
                    (ConnType::Local, None) => true,
                    (ConnType::Local, Some(_)) | (_, None) => false,
                    (ConnType::Host | ConnType::HostNoGssEnc, Some(_)) => true,
                    (ConnType::HostSsl, Some(_)) => c.tls,
                    (ConnType::HostNoSsl, Some(_)) => !c.tls,
                    (ConnType::HostGssEnc, Some(_)) => false,
                };
                conn_ok
                    && r.databases.iter().any(|d| match d {
                        NameMatch::All => true,
                        NameMatch::SameUser => database == user,
                        NameMatch::Replication => false,
                        NameMatch::Name(n) => n.as_bytes() == database,
                    })
                    && r.users.iter().any(|u| match u {
                        NameMatch::Name(n) => n.as_bytes() == user,
                        _ => true,
                    })
                    && match (r.addr, addr) {
                        (None, _) | (Some(AddrMatch::All), _) => true,
                        (Some(AddrMatch::Net { addr: net, mask }), Some(ip)) => {
                            in_net(ip, net, mask)
                        }
                        (Some(_), None) => false,
                    }
            })
            .map(|r| Decision {
                line: r.line,
                method: r.method,
                clientcert: r.clientcert,
            })
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
        }
    }

    fn decide(hba: &Hba, c: Client) -> Option<(usize, Method)> {
        hba.decide(&c).map(|d| (d.line, d.method))
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
                "host all all db.example.com trust",
                "host names are not supported",
            ),
            ("host all all samenet trust", "\"samenet\" is not supported"),
            ("host all +admins all trust", "group membership"),
            ("host all /^a all trust", "regular expressions"),
            ("host @dbs all all trust", "file inclusion"),
            ("host samerole all all trust", "role membership"),
            ("host all all all ldap", "\"ldap\" is not supported"),
            (
                "host all all all trusted",
                "invalid authentication method \"trusted\"",
            ),
            ("host all all all peer", "only supported on local sockets"),
            ("host all all all cert", "only supported on hostssl"),
            (
                "host all all all md5 map=x",
                "option \"map\" is not supported",
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
