import NftIR
import ServiceModel

/// Hand-built rulesets that use every statement, set shape and comment the IR has, in both families.
enum Samples {
    static func name(_ text: String) -> Name { Name(text)! }
    static func cidr(_ text: String) -> CIDR { CIDR(text)! }
    static func ip(_ text: String) -> IPAddress { IPAddress(text)! }

    static func table(_ family: Family) -> Table {
        let v4 = family == .ip
        let address = DataType.address(family)
        let a = ip(v4 ? "172.30.0.41" : "fd00:30::41"), b = ip(v4 ? "10.1.2.3" : "fd00:10::3"), c = ip(v4 ? "10.1.2.4" : "fd00:10::4")
        let service = name("service-ns1/web/tcp/http")
        let affinity = name("affinity-ns1/web/tcp/http")
        let dispatch: [Selector] = [.daddr, .l4proto, .thDport]
        let affinityKey: [Selector] = [.saddr, .daddr, .l4proto, .thDport]
        let sets = [
            NamedSet(name("cluster-ips"), key: [address], comment: Comment("Active ClusterIPs"),
                     elements: [Element([.address(b)]), Element([.address(a)])]),
            NamedSet(name("service-ips"), key: [address, .inetProto, .inetService], isMap: true, comment: Comment("ClusterIP, ExternalIP and LoadBalancer IP traffic"),
                     elements: [Element([.address(a), .proto(.tcp), .port(80)], verdict: .goto(service), comment: Comment("ns1/web:http")),
                                Element([.address(a), .proto(.udp), .port(53)], verdict: .drop),
                                Element([.address(b), .proto(.sctp), .port(9999)], verdict: .goto(name("reject-chain")), comment: Comment("ns1/x:sctp"))]),
            NamedSet(name("service-nodeports"), key: [.inetProto, .inetService], isMap: true,
                     elements: [Element([.proto(.tcp), .port(30080)], verdict: .jump(service)), Element([.proto(.udp), .port(30053)], verdict: .accept)]),
            NamedSet(name("hairpin-endpoints"), key: [address, address], comment: Comment("hairpin"),
                     elements: [Element([.address(b), .address(b)]), Element([.address(c), .address(c)])]),
            NamedSet(name("ports"), key: [.inetService], elements: [Element([.port(80)]), Element([.port(443)])]),
            NamedSet(name("protos"), key: [.inetProto], isMap: true, elements: [Element([.proto(.tcp)], verdict: .return)]),
            NamedSet(name("empty"), key: [address, .inetService]),
            NamedSet(name("affinity"), key: [address, address, .inetProto, .inetService], data: [address, .inetService],
                     flags: [.dynamic, .timeout], size: 1 << 20, comment: Comment("client . destination . port : backend"),
                     elements: [Element([.address(c), .address(a), .proto(.tcp), .port(80)], data: [.address(b), .port(8080)])]),
            NamedSet(name("affinity-clients"), key: [address, address, .inetProto, .inetService], flags: [.dynamic, .timeout], size: 1 << 20,
                     elements: [Element([.address(c), .address(a), .proto(.tcp), .port(80)])]),
            NamedSet(name("affinity-services"), key: [address, .inetProto, .inetService], isMap: true,
                     elements: [Element([.address(a), .proto(.tcp), .port(80)], verdict: .jump(affinity), comment: Comment("ns1/web:http"))]),
            NamedSet(name("affinity-nodeports"), key: [.inetProto, .inetService], isMap: true,
                     elements: [Element([.proto(.tcp), .port(30080)], verdict: .jump(affinity))]),
            NamedSet(name("firewall-ips"), key: [address, .inetProto, .inetService], comment: Comment("LoadBalancer destinations"),
                     elements: [Element([.address(a), .proto(.tcp), .port(80)]), Element([.address(a), .proto(.udp), .port(53)])]),
            NamedSet(name("firewall-allow"), key: [address, .inetProto, .inetService, address], flags: [.interval], comment: Comment("allowed sources"),
                     elements: [Element([.address(a), .proto(.tcp), .port(80), .prefix(cidr(v4 ? "10.0.0.0/8" : "fd00::/64"))]),
                                Element([.address(a), .proto(.tcp), .port(80), .prefix(cidr(v4 ? "203.0.113.7/32" : "2001:db8::7/128"))]),
                                Element([.address(a), .proto(.udp), .port(53), .prefix(cidr(v4 ? "192.0.2.0/25" : "2001:db8:1::/49"))])]),
            NamedSet(name("hairpin-buckets"), key: [address], isMap: true, comment: Comment("hairpin buckets"),
                     elements: [Element([.address(ip(v4 ? "0.0.0.0" : "::"))], verdict: .jump(name("hairpin-0"))),
                                Element([.address(ip(v4 ? "0.0.0.1" : "::1"))], verdict: .jump(name("hairpin-1")))]),
        ]
        let mark: UInt32 = 0x4000
        let chains = [
            Chain(name("nat-prerouting"), base: BaseChain(type: .nat, hook: .prerouting, priority: Priority(.dstnat)),
                  rules: [Rule([.verdict(.jump(name("services")))])]),
            Chain(name("nat-output"), base: BaseChain(type: .nat, hook: .output, priority: Priority(.dstnat, -10)),
                  rules: [Rule([.verdict(.jump(name("services")))])]),
            Chain(name("nat-postrouting"), base: BaseChain(type: .nat, hook: .postrouting, priority: Priority(.srcnat, 5)),
                  rules: [Rule([.ctStatusDNAT, .l4proto(.tcp), .vmap([.ctOriginalDaddr, .l4proto, .ctOriginalProtoDst], map: name("affinity-services"))]),
                          Rule([.ctStatusDNAT, .l4proto(.udp), .vmap([.l4proto, .ctOriginalProtoDst], map: name("affinity-nodeports"))]),
                          Rule([.verdict(.jump(name("masquerading")))])]),
            Chain(name("filter-prerouting-pre-dnat"), base: BaseChain(type: .filter, hook: .prerouting, priority: Priority(.dstnat, -10)),
                  rules: [Rule([.ctStateNew, .verdict(.jump(name("firewall-check")))])]),
            Chain(name("filter-input"), base: BaseChain(type: .filter, hook: .input, priority: Priority(.filter)),
                  rules: [Rule([.ctStateNew, .verdict(.jump(name("checks")))], comment: Comment("new connections"))]),
            Chain(name("filter-forward"), base: BaseChain(type: .filter, hook: .forward, priority: Priority(.filter, -3))),
            Chain(name("services"), rules: [
                Rule([.vmap([.daddr, .l4proto, .thDport], map: name("service-ips"))]),
                Rule([.fibLocal(.daddr), .address(.daddr, cidr(v4 ? "127.0.0.0/8" : "::1/128"), negated: true),
                      .vmap([.l4proto, .thDport], map: name("service-nodeports"))]),
                Rule([.lookup([.daddr], set: name("cluster-ips")), .reject], comment: Comment("reject traffic to undefined ports of ClusterIPs")),
                Rule([.address(.daddr, cidr(v4 ? "172.16.0.0/12" : "fd00:30::/108"), negated: false), .verdict(.drop)]),
                Rule([.address(.saddr, cidr(v4 ? "10.0.0.0/8" : "fd00::/64"), negated: false), .verdict(.goto(service))]),
                Rule([.address(.saddr, cidr(v4 ? "10.1.0.0/16" : "fd00:10::/60"), negated: true), .verdict(.return)]),
                Rule([.address(.saddr, cidr(v4 ? "0.0.0.0/0" : "::/0"), negated: false), .address(.daddr, cidr(v4 ? "10.9.8.0/21" : "fd00::/7"), negated: false), .verdict(.accept)]),
                Rule([.address(.daddr, cidr(v4 ? "10.1.2.3/32" : "fd00:10::3/128"), negated: false), .lookup([.thDport], set: name("ports")),
                      .vmap([.l4proto], map: name("protos"))]),
                Rule([.fibLocal(.saddr), .setMarkBit(mark)], comment: Comment("masquerade local traffic")),
            ]),
            Chain(name("checks"), rules: [Rule([.verdict(.accept)])]),
            Chain(name("firewall-check"), rules: [
                Rule([.lookup(dispatch, set: name("firewall-ips")), .notInSet(dispatch + [.saddr], set: name("firewall-allow")), .verdict(.drop)],
                     comment: Comment("drop sources outside loadBalancerSourceRanges")),
                Rule([.lookup(dispatch + [.saddr], set: name("firewall-allow")), .verdict(.return)]),
            ]),
            Chain(affinity, rules: [
                Rule([.l4proto(.tcp), .update(map: name("affinity"), key: [.saddr, .ctOriginalDaddr, .l4proto, .ctOriginalProtoDst],
                                              timeoutMilliseconds: 10800000, data: [.field(.daddr), .field(.dport(.tcp))])]),
            ]),
            Chain(name("affinity-sctp"), rules: [
                Rule([.l4proto(.sctp), .update(map: name("affinity"), key: [.saddr, .ctOriginalDaddr, .l4proto, .ctOriginalProtoDst],
                                               timeoutMilliseconds: 600000, data: [.field(.daddr), .field(.dport(.sctp))])]),
            ]),
            Chain(name("affinity-arms"), rules: [
                Rule([.lookup(affinityKey, set: name("affinity-clients")),
                      .update(map: name("affinity-clients"), key: affinityKey, timeoutMilliseconds: 600000, data: []),
                      .update(map: name("affinity"), key: affinityKey, timeoutMilliseconds: 600100, data: [.field(.daddr), .field(.thDport)]),
                      .dnatMap(affinityKey, map: name("affinity"))]),
                Rule([.numgenIncZero(modulus: 2), .update(map: name("affinity-clients"), key: affinityKey, timeoutMilliseconds: 600000, data: []),
                      .update(map: name("affinity"), key: affinityKey, timeoutMilliseconds: 600100, data: [.value(.address(b)), .value(.port(8080))]),
                      .dnatMap(affinityKey, map: name("affinity"))]),
            ]),
            Chain(name("reject-chain"), rules: [Rule([.reject])]),
            Chain(name("masquerading"), rules: [
                Rule([.ctStatusDNAT, .lookup([.saddr, .daddr], set: name("hairpin-endpoints")), .setMarkBit(mark)]),
                Rule([.ctStatusDNAT, .vmap([.maskedDaddr(lowBits: 9)], map: name("hairpin-buckets"))]),
                Rule([.markBitClear(mark), .verdict(.return)]),
                Rule([.toggleMarkBit(mark)]),
                Rule([.masquerade(fullyRandom: true)]),
                Rule([.masquerade(fullyRandom: false)]),
            ]),
            Chain(name("hairpin-0"), rules: [Rule([.lookup([.saddr, .daddr], set: name("hairpin-endpoints")), .setMarkBit(mark)])]),
            Chain(name("hairpin-1"), rules: [Rule([.lookup([.saddr, .daddr], set: name("hairpin-endpoints")), .setMarkBit(mark)])]),
            Chain(service, rules: [
                Rule([.address(.daddr, CIDR(address: a, prefixLength: v4 ? 32 : 128)!, negated: false), .address(.saddr, cidr(v4 ? "10.0.0.0/8" : "fd00::/48"), negated: true), .setMarkBit(mark)]),
                Rule([.dnatMap([.saddr, .daddr, .l4proto, .thDport], map: name("affinity"))]),
                Rule([.numgenIncZero(modulus: 3), .l4proto(.tcp), .dnat(b, port: 8080)]),
                Rule([.numgenIncZero(modulus: 2), .l4proto(.udp), .dnat(c, port: 53)]),
                Rule([.l4proto(.sctp), .dnat(c, port: 65535)]),
            ]),
        ]
        return Table(family: family, name: name("nftproxy"), comment: Comment("rules for nftproxy: do not edit"), sets: sets, chains: chains)
    }

    static var ruleset: Ruleset { Ruleset(tables: [table(.ip), table(.ip6)]) }

    /// Whether nft 1.0.6 can load the rule: an `update @map { KEY : DATA }` with a key over 16
    /// bytes (any ip6 session-affinity key) aborts it in netlink_gen_expr (`dreg < ctx->reg_low`).
    static func nftCanLoad(_ rule: Rule, family: Family) -> Bool {
        !rule.statements.contains { statement in
            guard case .update(_, let key, _, let data) = statement, !data.isEmpty else { return false }
            return key.map { family == .ip6 && ($0 == .saddr || $0 == .daddr || $0 == .ctOriginalDaddr) ? 16 : 4 }.reduce(0, +) > 16
        }
    }

    /// `ruleset` without the rules nft 1.0.6 cannot load.
    static var nftLoadable: Ruleset {
        var copy = ruleset
        for t in copy.tables.indices {
            let family = copy.tables[t].family
            for c in copy.tables[t].chains.indices {
                copy.tables[t].chains[c].rules.removeAll { !nftCanLoad($0, family: family) }
            }
        }
        return copy
    }

    static var every: [Statement] {
        Family.allCases.flatMap { family in table(family).chains.flatMap { $0.rules.flatMap(\.statements) } }
    }
}
