import NftIR
import NftText
import ServiceModel
import Testing

private let table = TableRef(.ip, Naming.table)
private let chainA = Name("service-ns/a/tcp/http")!
private let chainB = Name("service-ns/b/tcp/http")!

private func ruleset(chains: [Chain], elements: [Element]) -> Ruleset {
    Ruleset(tables: [Table(
        family: .ip, name: Naming.table,
        sets: [NamedSet(Naming.serviceIPs, key: [.ipv4Address, .inetProto, .inetService], isMap: true, elements: elements)],
        chains: [Chain(Name("services")!, rules: [Rule([.vmap([.daddr, .l4proto, .thDport], map: Naming.serviceIPs)])])] + chains
    )])
}

private func dnatChain(_ name: Name, _ backends: [String]) -> Chain {
    Chain(name, rules: backends.enumerated().map { index, ip in
        let remaining = backends.count - index
        return Rule((remaining > 1 ? [.numgenIncZero(modulus: UInt32(remaining))] : []) + [.l4proto(.tcp), .dnat(IPAddress(ip)!, port: 80)])
    })
}

private func element(_ ip: String, _ chain: Name) -> Element {
    Element([.address(IPAddress(ip)!), .proto(.tcp), .port(80)], verdict: .goto(chain), comment: Comment("ns/x:http"))
}

@Suite struct StatementTextTests {
    @Test func statementsRenderAsNftWritesThem() {
        let cases: [(Statement, Family, String)] = [
            (.address(.daddr, CIDR("172.30.0.41")!, negated: false), .ip, "ip daddr 172.30.0.41"),
            (.address(.saddr, CIDR("10.0.0.0/8")!, negated: true), .ip, "ip saddr != 10.0.0.0/8"),
            (.address(.saddr, CIDR("fd00:10::/64")!, negated: false), .ip6, "ip6 saddr fd00:10::/64"),
            (.vmap([.daddr, .l4proto, .thDport], map: Naming.serviceIPs), .ip6, "ip6 daddr . meta l4proto . th dport vmap @service-ips"),
            (.lookup([.saddr, .daddr], set: Naming.hairpin), .ip, "ip saddr . ip daddr @hairpin-endpoints"),
            (.numgenIncZero(modulus: 3), .ip, "numgen inc mod 3 0"),
            (.setMarkBit(0x4000), .ip, "meta mark set meta mark | 0x00004000"),
            (.toggleMarkBit(0x20), .ip, "meta mark set meta mark ^ 0x00000020"),
            (.markBitClear(0x4000), .ip, "meta mark & 0x00004000 == 0x00000000"),
            (.dnat(IPAddress("fd00:10:180::1")!, port: 80), .ip6, "dnat to [fd00:10:180::1]:80"),
            (.dnat(IPAddress("10.180.0.1")!, port: 8080), .ip, "dnat to 10.180.0.1:8080"),
            (.fibLocal(.saddr), .ip, "fib saddr type local"),
            (.masquerade(fullyRandom: true), .ip, "masquerade fully-random"),
            (.verdict(.goto(chainA)), .ip, "goto service-ns/a/tcp/http"),
        ]
        for (statement, family, text) in cases {
            #expect(NftText.statement(statement, family: family) == text)
        }
    }

    @Test func scriptReplacesOnlyOurTables() {
        let text = NftText.script(ruleset(chains: [dnatChain(chainA, ["10.0.0.1"])], elements: [element("172.30.0.1", chainA)]), header: ["hello"])
        let lines = text.split(separator: "\n")
        #expect(lines[0] == "#!/usr/sbin/nft -f")
        #expect(lines[1] == "# hello")
        #expect(lines[2] == "add table ip nftproxy")
        #expect(lines[3] == "delete table ip nftproxy")
        #expect(text.contains("\t\t\t172.30.0.1 . tcp . 80 comment \"ns/x:http\" : goto service-ns/a/tcp/http\n"))
    }

    @Test func namesRejectWhatNftCannotParse() {
        #expect(Name("service-ns/a/tcp/http") != nil)
        #expect(Name("1abc") == nil)
        #expect(Name("has space") == nil)
        #expect(Name("") == nil)
        #expect(Name(String(repeating: "a", count: 256)) == nil)
        #expect(Name(String(repeating: "a", count: 255)) != nil)
    }

    @Test func commentsAreCutToWhatNftAccepts() {
        let long = Comment(String(repeating: "x", count: 300) + "\"")
        #expect(long.text.utf8.count == Comment.maxBytes)
        #expect(Comment("say \"hi\"").text == "say 'hi'")
    }
}

@Suite struct DiffTests {
    @Test func identicalRulesetsGiveAnEmptyTransaction() {
        let rules = ruleset(chains: [dnatChain(chainA, ["10.0.0.1", "10.0.0.2"])], elements: [element("172.30.0.1", chainA)])
        #expect(Transaction.diff(from: rules, to: rules).isEmpty)
    }

    @Test func fromNothingCreatesTableSetsChainsRulesThenElements() {
        let rules = ruleset(chains: [dnatChain(chainA, ["10.0.0.1"])], elements: [element("172.30.0.1", chainA)])
        let ops = Transaction.diff(from: nil, to: rules).operations
        guard case .addTable = ops.first else { Issue.record("first op must create the table"); return }
        let firstRule = ops.firstIndex { if case .addRule = $0 { true } else { false } }!
        let lastChain = ops.lastIndex { if case .addChain = $0 { true } else { false } }!
        let elements = ops.firstIndex { if case .addElements = $0 { true } else { false } }!
        #expect(lastChain < firstRule)
        #expect(firstRule < elements)
    }

    @Test func anEndpointChangeRewritesOnlyThatChain() {
        let before = ruleset(chains: [dnatChain(chainA, ["10.0.0.1"]), dnatChain(chainB, ["10.0.1.1"])],
                             elements: [element("172.30.0.1", chainA), element("172.30.0.2", chainB)])
        let after = ruleset(chains: [dnatChain(chainA, ["10.0.0.1", "10.0.0.9"]), dnatChain(chainB, ["10.0.1.1"])],
                            elements: [element("172.30.0.1", chainA), element("172.30.0.2", chainB)])
        let text = NftText.commands(Transaction.diff(from: before, to: after))
        #expect(text == """
            flush chain ip nftproxy service-ns/a/tcp/http
            add rule ip nftproxy service-ns/a/tcp/http numgen inc mod 2 0 meta l4proto tcp dnat to 10.0.0.1:80
            add rule ip nftproxy service-ns/a/tcp/http meta l4proto tcp dnat to 10.0.0.9:80

            """)
    }

    @Test func aRemovedServiceLosesItsElementBeforeItsChain() {
        let before = ruleset(chains: [dnatChain(chainA, ["10.0.0.1"]), dnatChain(chainB, ["10.0.1.1"])],
                             elements: [element("172.30.0.1", chainA), element("172.30.0.2", chainB)])
        let after = ruleset(chains: [dnatChain(chainA, ["10.0.0.1"])], elements: [element("172.30.0.1", chainA)])
        let text = NftText.commands(Transaction.diff(from: before, to: after))
        #expect(text == """
            flush chain ip nftproxy service-ns/b/tcp/http
            delete element ip nftproxy service-ips { 172.30.0.2 . tcp . 80 }
            delete chain ip nftproxy service-ns/b/tcp/http

            """)
    }

    @Test func aChangedVerdictIsDeletedAndReAdded() {
        let before = ruleset(chains: [dnatChain(chainA, ["10.0.0.1"]), dnatChain(chainB, ["10.0.1.1"])], elements: [element("172.30.0.1", chainA)])
        let after = ruleset(chains: [dnatChain(chainA, ["10.0.0.1"]), dnatChain(chainB, ["10.0.1.1"])], elements: [element("172.30.0.1", chainB)])
        let ops = Transaction.diff(from: before, to: after).operations
        #expect(ops.count == 2)
        #expect(NftText.command(ops[0]) == "delete element ip nftproxy service-ips { 172.30.0.1 . tcp . 80 }")
        #expect(NftText.command(ops[1]) == "add element ip nftproxy service-ips { 172.30.0.1 . tcp . 80 comment \"ns/x:http\" : goto service-ns/b/tcp/http }")
    }

    @Test func aChangedBaseChainReplacesTheTable() {
        let before = ruleset(chains: [], elements: [])
        var after = before
        after.tables[0].chains[0].base = BaseChain(type: .nat, hook: .prerouting, priority: Priority(.dstnat, -5))
        let ops = Transaction.diff(from: before, to: after).operations
        #expect(ops.first == .deleteTable(table))
        #expect(ops.dropFirst().first == .addTable(table, comment: nil))
    }

    @Test func aTableNoLongerWantedIsDeleted() {
        let before = ruleset(chains: [], elements: [])
        #expect(Transaction.diff(from: before, to: Ruleset()).operations == [.deleteTable(table)])
    }
}

/// The renderer formats numbers and addresses itself, into its byte buffer; these check it
/// against the model's own formatters (`IPAddress.description`, `CIDR.description`) and the
/// standard library's, over inputs chosen to reach every branch.
@Suite struct FormattingTests {
    /// Every pattern of zero and non-zero groups (so every zero run RFC 5952 can compress, ties
    /// included), with group values of one to four hex digits.
    static let ipv6Addresses: [IPAddress] = {
        let named = ["::", "::1", "1::", "::ffff:10.0.0.1", "::ffff:0:0", "64:ff9b::192.0.2.33", "fe80::1:0:0:1",
                     "2001:db8::1", "2001:db8:0:0:1:0:0:1", "2001:0:0:1:0:0:0:1", "2001:db8:0:1:1:1:1:1",
                     "1:0:1:0:1:0:1:0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fd00:10:180::abcd"].map { IPAddress($0)! }
        let values: [UInt16] = [0x1, 0xab, 0xf00, 0xbeef]
        let patterns = (0..<256).map { zeros in
            IPAddress(bytes: (0..<8).flatMap { group -> [UInt8] in
                let value = zeros >> group & 1 == 1 ? 0 : values[(zeros + group) % values.count]
                return [UInt8(value >> 8), UInt8(value & 0xff)]
            })!
        }
        return named + patterns
    }()

    static let ipv4Addresses = ["0.0.0.0", "255.255.255.255", "10.0.0.1", "1.22.133.4", "100.9.99.199", "172.16.0.10"].map { IPAddress($0)! }

    @Test func addressesAreWrittenAsTheModelPrintsThem() {
        for ip in Self.ipv4Addresses + Self.ipv6Addresses {
            let family = Family(ip.family)
            let host = CIDR(address: ip, prefixLength: ip.family.maxPrefixLength)!
            #expect(NftText.statement(.address(.daddr, host, negated: false), family: family) == "\(family.rawValue) daddr \(ip.description)")
            #expect(NftText.element(Element([.address(ip)]), family: family) == ip.description)
            let bracketed = ip.family == .ipv4 ? ip.description : "[\(ip.description)]"
            #expect(NftText.statement(.dnat(ip, port: 8080), family: family) == "dnat to \(bracketed):8080")
        }
    }

    @Test func prefixesAreWrittenAsTheModelPrintsThem() {
        for ip in Self.ipv4Addresses + Self.ipv6Addresses {
            for length in [0, 1, 7, 8, 9, 31, 48, 63, 64, 65, 127] where length < ip.family.maxPrefixLength {
                let prefix = CIDR(address: ip, prefixLength: length)!
                #expect(NftText.element(Element([.prefix(prefix)]), family: Family(ip.family)) == prefix.description)
            }
        }
    }

    @Test func numbersAreDecimalAndMarksPaddedHex() {
        for port: UInt16 in [0, 1, 9, 10, 99, 100, 999, 1000, 9999, 10000, 65535] {
            #expect(NftText.element(Element([.port(port)]), family: .ip) == String(port))
        }
        for modulus: UInt32 in [1, 10, 4_294_967_295] {
            #expect(NftText.statement(.numgenIncZero(modulus: modulus), family: .ip) == "numgen inc mod \(String(modulus)) 0")
        }
        for bit: UInt32 in [0, 1, 0xf, 0x10, 0x4000, 0x8000_0000, 0xffff_ffff] {
            let digits = String(bit, radix: 16)
            let mark = "0x" + String(repeating: "0", count: 8 - digits.count) + digits
            #expect(NftText.statement(.setMarkBit(bit), family: .ip) == "meta mark set meta mark | \(mark)")
        }
    }

    @Test func aPriorityOutsideItsKeywordsHookIsANumberWithItsSign() {
        let chain = Chain(Naming.natOutput, base: BaseChain(type: .filter, hook: .output, priority: Priority(.dstnat, -10)))
        let text = NftText.block(Table(family: .ip, name: Naming.table, chains: [chain]))
        #expect(text.contains("\t\ttype filter hook output priority -110; policy accept;\n"))
    }

    @Test func commentsKeepTheirCharacters() {
        let rule = Rule([.verdict(.accept)], comment: Comment("café → naïve ∞"))
        #expect(NftText.rule(rule, family: .ip) == "accept comment \"café → naïve ∞\"")
    }

    /// Far more text than the buffer first holds: what `commands` writes at once must equal each
    /// command written on its own.
    @Test func longTextIsTheSumOfItsLines() {
        let operations = (0..<2000).map { index in
            Operation.addRule(table, chain: chainA, Rule([.address(.daddr, CIDR("10.0.\(index / 256).\(index % 256)")!, negated: false), .verdict(.goto(chainB))]))
        }
        let text = NftText.commands(Transaction(operations))
        #expect(text == operations.map { NftText.command($0) + "\n" }.joined())
        #expect(text.hasSuffix("add rule ip nftproxy service-ns/a/tcp/http ip daddr 10.0.7.207 goto service-ns/b/tcp/http\n"))
    }
}
