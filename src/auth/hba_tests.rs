//! Tests of `hba.rs`: parsing, the decision walk, and what it asks for.

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
        .map(|d| (d.at.line, d.method))
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
    let hba = Hba::parse("host \"all\" \"a,b\"\"c\" all trust\nhost all all all reject\n").unwrap();
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
    // + starts a plain database name, / a regular expression; masks need not be
    // contiguous.
    assert_eq!(
        decide(&hba, client(Some("10.7.0.200"), false, "u", "+ops")),
        Some((6, Method::Password))
    );
    assert_eq!(
        decide(&hba, client(Some("10.99.0.5"), false, "u", "my_database")),
        Some((6, Method::Password))
    );
    assert_eq!(
        decide(&hba, client(Some("10.99.0.5"), false, "u", "/dat")),
        None
    );
    assert_eq!(
        decide(&hba, client(Some("11.7.0.200"), false, "u", "+ops")),
        None
    );
    let e = Hba::parse("local all all trust\nhost \\\nall all 10.0.0.0/33 trust\n").unwrap_err();
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
        hba.decide(&c, &none)
            .map(|d| d.map(|d| (d.at.line, d.method)))
    };
    // Decided before any line that needs roles, or by a name on the line that does.
    assert_eq!(
        hba.decide(&client(None, false, "postgres", "x"), &none),
        Ok(Some(Decision {
            at: At {
                line: 1,
                file: None,
                top: 1
            },
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
    assert_eq!(partly.decide(&c, &none).unwrap().unwrap().at.line, 1);
    assert!(Hba::parse("local all all peer map=")
        .unwrap()
        .maps()
        .is_empty());
    let partly = Hba::parse("host all +\"ops\" all trust").unwrap();
    let carol_roles = roles(&["carol", "ops"]);
    c.roles = Some(&carol_roles);
    assert_eq!(partly.decide(&c, &none).unwrap().unwrap().at.line, 1);
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
        hba.decide(&c, &none)
            .map(|d| d.map(|d| (d.at.line, d.method)))
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
    let hba =
        Hba::parse("host all a samehost trust\nhost all a samenet md5\nhost all all all reject\n")
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
    assert_eq!(hba.decide(&c, &counted).unwrap().unwrap().at.line, 3);
    assert_eq!(reads.get(), 1);
    let b = client(Some("10.9.9.9"), false, "b", "d");
    assert_eq!(hba.decide(&b, &counted).unwrap().unwrap().at.line, 3);
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
    assert!(msg.contains("maximum nesting depth exceeded"), "{msg}");
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
        (
            "host all /^a( all trust",
            "invalid regular expression \"^a(\"",
        ),
        ("host /[ all all trust", "invalid regular expression \"[\""),
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
