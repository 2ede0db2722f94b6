import NftIR
@testable import NftNetlink
import ServiceModel
import Testing

/// The pure parts of the lowering: no kernel, no root.
struct LoweringTests {
    @Test(arguments: Family.allCases)
    func everyStatementRaisesBackToItself(_ family: Family) throws {
        let table = Samples.table(family)
        let sets = SetCatalog(table.sets)
        for chain in table.chains {
            for rule in chain.rules {
                let expressions = try Lowering.rule(rule, family: family, sets: sets)
                #expect(Raising.rule(expressions, family: family, sets: sets) == rule.statements, "\(rule.statements)")
            }
        }
    }

    /// A batch writes each rule's expressions straight into its message. Decoded as a dump is,
    /// those bytes are the expressions `Lowering.rule` lists, and the rule, comment included.
    @Test(arguments: Family.allCases)
    func rulesWrittenIntoTheirMessageDecodeToThemselves(_ family: Family) throws {
        let table = Samples.table(family)
        let sets = SetCatalog(table.sets)
        let ref = TableRef(family, table.name)
        var decoder = DumpDecoder()
        for chain in table.chains {
            for rule in chain.rules {
                for comment in [nil, Comment("written by \(chain.name)")] {
                    let written = Rule(rule.statements, comment: comment)
                    let payload = try payloads([.addRule(ref, chain: chain.name, written)], sets: sets)[0]
                    var expressions: [Expression] = []
                    var decodedComment: NftIR.Comment?
                    payload.withUnsafeBytes { bytes in
                        for attribute in Attributes(bytes) {
                            if attribute.type == A.ruleExpressions {
                                for element in attribute.nested { expressions.append(decoder.expression(element)) }
                            } else if attribute.type == A.ruleUserdata {
                                decodedComment = Userdata(bytes: Array(attribute.value)).string(K.udataRuleComment).map(Comment.init)
                            }
                        }
                    }
                    // The decoder normalises nat flags as it does the kernel's (see `Expression.normalized`).
                    #expect(expressions == (try Lowering.rule(written, family: family, sets: sets)).map(\.normalized), "\(written.statements)")
                    #expect(Raising.rule(expressions, family: family, sets: sets) == written.statements)
                    #expect(decodedComment == comment)
                }
            }
        }
    }

    /// The register layout of nft's `netlink_put_register`: a value starting on a 16-byte
    /// boundary uses the legacy register, others NFT_REG32_xx.
    @Test func concatenationRegisters() throws {
        let none = SetCatalog()
        let v4 = try Lowering.statement(.vmap([.daddr, .l4proto, .thDport], map: Name("m")!), family: .ip, sets: none)
        #expect(v4 == [.payload(base: 1, offset: 16, length: 4, dreg: 1), .meta(key: 16, dreg: 9),
                       .payload(base: 2, offset: 2, length: 2, dreg: 10), .lookup(sreg: 1, dreg: 0, set: "m", flags: 0)])
        let v6 = try Lowering.statement(.lookup([.saddr, .daddr], set: Name("h")!), family: .ip6, sets: none)
        #expect(v6 == [.payload(base: 1, offset: 8, length: 16, dreg: 1), .payload(base: 1, offset: 24, length: 16, dreg: 2),
                       .lookup(sreg: 1, dreg: nil, set: "h", flags: 0)])
        let v6vmap = try Lowering.statement(.vmap([.daddr, .l4proto, .thDport], map: Name("m")!), family: .ip6, sets: none)
        #expect(v6vmap.map(\.description).joined(separator: "; ").contains("reg 13"))
        #expect(Register.slot(1) == 0 && Register.slot(9) == 1 && Register.slot(2) == 4 && Register.slot(18) == 10 && Register.slot(0) == nil)
    }

    /// Prefixes as nft compiles them: byte-aligned ones load fewer bytes, others are masked.
    @Test func prefixShapes() throws {
        let none = SetCatalog()
        let slash8 = try Lowering.statement(.address(.saddr, CIDR("10.0.0.0/8")!, negated: false), family: .ip, sets: none)
        #expect(slash8 == [.payload(base: 1, offset: 12, length: 1, dreg: 1), .cmp(sreg: 1, op: 0, data: [10])])
        let slash12 = try Lowering.statement(.address(.daddr, CIDR("172.16.0.0/12")!, negated: true), family: .ip, sets: none)
        #expect(slash12 == [.payload(base: 1, offset: 16, length: 4, dreg: 1),
                            .bitwise(sreg: 1, dreg: 1, mask: [0xff, 0xf0, 0, 0], xor: [0, 0, 0, 0]),
                            .cmp(sreg: 1, op: 1, data: [172, 16, 0, 0])])
        #expect(throws: LoweringError.self) { try Lowering.statement(.address(.l4proto, CIDR("10.0.0.0/8")!, negated: false), family: .ip, sets: none) }
        #expect(throws: LoweringError.self) { try Lowering.statement(.address(.saddr, CIDR("fd00::/8")!, negated: false), family: .ip, sets: none) }
    }

    /// The sets the new statements meet, as the compiler declares them (the tests' `nft -f` files use the same).
    static func catalog(_ family: Family) -> SetCatalog {
        let address = DataType.address(family)
        return SetCatalog([
            NamedSet(Name("affinity")!, key: [address, address, .inetProto, .inetService], data: [address, .inetService],
                     flags: [.dynamic, .timeout], size: 1 << 20),
            NamedSet(Name("affsvc")!, key: [address, .inetProto, .inetService], isMap: true),
            NamedSet(Name("affnp")!, key: [.inetProto, .inetService], isMap: true),
            NamedSet(Name("fwips")!, key: [address, .inetProto, .inetService]),
            NamedSet(Name("fwallow")!, key: [address, .inetProto, .inetService, address], flags: [.interval]),
        ])
    }

    /// The session-affinity and source-range statements, expression for expression as nft 1.0.6
    /// compiles them (`nft --debug=netlink -f`, ip tables): the rules
    ///   ip daddr . meta l4proto . th dport @fwips ip daddr . meta l4proto . th dport . ip saddr != @fwallow drop
    ///   dnat to ip saddr . ip daddr . meta l4proto . th dport map @affinity
    ///   meta l4proto tcp update @affinity { ip saddr . ct original ip daddr . meta l4proto . ct original proto-dst timeout 10800s : ip daddr . tcp dport }
    ///   ct status dnat meta l4proto tcp ct original ip daddr . meta l4proto . ct original proto-dst vmap @affsvc
    ///   ct status dnat meta l4proto udp meta l4proto . ct original proto-dst vmap @affnp
    @Test func affinityAndSourceRangeStatementsIPv4() throws {
        let sets = Self.catalog(.ip)
        let dispatch: [Selector] = [.daddr, .l4proto, .thDport]
        let firewall = Rule([.lookup(dispatch, set: Name("fwips")!), .notInSet(dispatch + [.saddr], set: Name("fwallow")!), .verdict(.drop)])
        #expect(try Lowering.rule(firewall, family: .ip, sets: sets) == [
            .payload(base: 1, offset: 16, length: 4, dreg: 1), .meta(key: 16, dreg: 9), .payload(base: 2, offset: 2, length: 2, dreg: 10),
            .lookup(sreg: 1, dreg: nil, set: "fwips", flags: 0),
            .payload(base: 1, offset: 16, length: 4, dreg: 1), .meta(key: 16, dreg: 9),
            .byteorder(sreg: 9, dreg: 9, op: 1, length: 1, size: 2),  // byteorder reg 9 = hton(reg 9, 2, 1)
            .payload(base: 2, offset: 2, length: 2, dreg: 10), .payload(base: 1, offset: 12, length: 4, dreg: 11),
            .lookup(sreg: 1, dreg: nil, set: "fwallow", flags: 1),  // lookup reg 1 set fwallow 0x1
            .immediateVerdict(code: 0, chain: nil),
        ])
        let dnat = Rule([.dnatMap([.saddr, .daddr, .l4proto, .thDport], map: Name("affinity")!)])
        #expect(try Lowering.rule(dnat, family: .ip, sets: sets) == [
            .payload(base: 1, offset: 12, length: 4, dreg: 1), .payload(base: 1, offset: 16, length: 4, dreg: 9),
            .meta(key: 16, dreg: 10), .payload(base: 2, offset: 2, length: 2, dreg: 11),
            .lookup(sreg: 1, dreg: 1, set: "affinity", flags: 0),
            .nat(type: 1, family: 2, addrMin: 1, protoMin: 9, flags: 0),  // nat dnat ip addr_min reg 1 proto_min reg 9
        ])
        let update = Rule([.l4proto(.tcp), .update(map: Name("affinity")!, key: [.saddr, .ctOriginalDaddr, .l4proto, .ctOriginalProtoDst],
                                                   timeoutMilliseconds: 10800000, data: [.field(.daddr), .field(.dport(.tcp))])])
        #expect(try Lowering.rule(update, family: .ip, sets: sets) == [
            .meta(key: 16, dreg: 1), .cmp(sreg: 1, op: 0, data: [6]),
            .payload(base: 1, offset: 12, length: 4, dreg: 1),
            .ct(key: 20, dreg: 9, direction: 0),  // ct load dst_ip => reg 9 , dir original
            .meta(key: 16, dreg: 10),
            .ct(key: 12, dreg: 11, direction: 0),  // ct load proto_dst => reg 11 , dir original
            .payload(base: 1, offset: 16, length: 4, dreg: 2), .payload(base: 2, offset: 2, length: 2, dreg: 13),
            .dynset(op: 1, sregKey: 1, sregData: 2, set: "affinity", timeout: 10_800_000),  // dynset update reg_key 1 set affinity sreg_data 2 timeout 10800000ms
        ])
        // A session-affinity arm records a constant backend: `: 10.1.2.3 . 8080` as immediates
        // into the data slots (nft: `immediate reg 2 0x0302010a`, `immediate reg 13 0x0000901f`).
        let arm = Statement.update(map: Name("affinity")!, key: [.saddr, .daddr, .l4proto, .thDport], timeoutMilliseconds: 600100,
                                   data: [.value(.address(IPAddress("10.1.2.3")!)), .value(.port(8080))])
        #expect(Array(try Lowering.statement(arm, family: .ip, sets: sets).suffix(3)) == [
            .immediateData(dreg: 2, data: [10, 1, 2, 3]), .immediateData(dreg: 13, data: [0x1f, 0x90]),
            .dynset(op: 1, sregKey: 1, sregData: 2, set: "affinity", timeout: 600_100),
        ])
        #expect(Raising.rule(try Lowering.rule(Rule([arm]), family: .ip, sets: sets), family: .ip, sets: sets) == [arm])
        let services = Rule([.ctStatusDNAT, .l4proto(.tcp), .vmap([.ctOriginalDaddr, .l4proto, .ctOriginalProtoDst], map: Name("affsvc")!)])
        #expect(Array(try Lowering.rule(services, family: .ip, sets: sets).suffix(4)) == [
            .ct(key: 20, dreg: 1, direction: 0), .meta(key: 16, dreg: 9), .ct(key: 12, dreg: 10, direction: 0),
            .lookup(sreg: 1, dreg: 0, set: "affsvc", flags: 0),
        ])
        let nodePorts = Rule([.ctStatusDNAT, .l4proto(.udp), .vmap([.l4proto, .ctOriginalProtoDst], map: Name("affnp")!)])
        #expect(Array(try Lowering.rule(nodePorts, family: .ip, sets: sets).suffix(5)) == [
            .meta(key: 16, dreg: 1), .cmp(sreg: 1, op: 0, data: [17]),
            .meta(key: 16, dreg: 1), .ct(key: 12, dreg: 9, direction: 0), .lookup(sreg: 1, dreg: 0, set: "affnp", flags: 0),
        ])
        for rule in [firewall, dnat, update, services, nodePorts] {
            #expect(Raising.rule(try Lowering.rule(rule, family: .ip, sets: sets), family: .ip, sets: sets) == rule.statements)
        }
    }

    /// The same in ip6 tables (`nft --debug=netlink -f`). nft 1.0.6 aborts on the ip6 `update`
    /// (`netlink_gen_expr: Assertion 'dreg < ctx->reg_low'`: it gives a key of any length one
    /// 16-byte register); its layout here is later nft's, the data right after the 40-byte key.
    @Test func affinityAndSourceRangeStatementsIPv6() throws {
        let sets = Self.catalog(.ip6)
        let dispatch: [Selector] = [.daddr, .l4proto, .thDport]
        #expect(try Lowering.statement(.notInSet(dispatch + [.saddr], set: Name("fwallow")!), family: .ip6, sets: sets) == [
            .payload(base: 1, offset: 24, length: 16, dreg: 1), .meta(key: 16, dreg: 2),
            .byteorder(sreg: 2, dreg: 2, op: 1, length: 1, size: 2),
            .payload(base: 2, offset: 2, length: 2, dreg: 13), .payload(base: 1, offset: 8, length: 16, dreg: 14),
            .lookup(sreg: 1, dreg: nil, set: "fwallow", flags: 1),
        ])
        #expect(try Lowering.statement(.dnatMap([.saddr, .daddr, .l4proto, .thDport], map: Name("affinity")!), family: .ip6, sets: sets) == [
            .payload(base: 1, offset: 8, length: 16, dreg: 1), .payload(base: 1, offset: 24, length: 16, dreg: 2),
            .meta(key: 16, dreg: 3), .payload(base: 2, offset: 2, length: 2, dreg: 17),
            .lookup(sreg: 1, dreg: 1, set: "affinity", flags: 0),
            .nat(type: 1, family: 10, addrMin: 1, protoMin: 2, flags: 0),  // nat dnat ip6 addr_min reg 1 proto_min reg 2
        ])
        #expect(try Lowering.statement(.vmap([.ctOriginalDaddr, .l4proto, .ctOriginalProtoDst], map: Name("affsvc")!), family: .ip6, sets: sets) == [
            .ct(key: 22, dreg: 1, direction: 0),  // ct load dst_ip6 => reg 1 , dir original
            .meta(key: 16, dreg: 2), .ct(key: 12, dreg: 13, direction: 0),
            .lookup(sreg: 1, dreg: 0, set: "affsvc", flags: 0),
        ])
        let update = Statement.update(map: Name("affinity")!, key: [.saddr, .ctOriginalDaddr, .l4proto, .ctOriginalProtoDst],
                                      timeoutMilliseconds: 10800000, data: [.field(.daddr), .field(.dport(.sctp))])
        #expect(try Lowering.statement(update, family: .ip6, sets: sets) == [
            .payload(base: 1, offset: 8, length: 16, dreg: 1), .ct(key: 22, dreg: 2, direction: 0),
            .meta(key: 16, dreg: 3), .ct(key: 12, dreg: 17, direction: 0),
            .payload(base: 1, offset: 24, length: 16, dreg: 18), .payload(base: 2, offset: 2, length: 2, dreg: 22),
            .dynset(op: 1, sregKey: 1, sregData: 18, set: "affinity", timeout: 10_800_000),
        ])
        let rule = Rule([.l4proto(.sctp), update])
        #expect(Raising.rule(try Lowering.rule(rule, family: .ip6, sets: sets), family: .ip6, sets: sets) == rule.statements)
    }

    /// nft 1.0.6 gives a short key a whole 16-byte register (`update @m { ip saddr . ip daddr : ip daddr . th dport }`
    /// puts the data in reg 2, not reg 10), and a set update has no data register.
    @Test func dynsetRegistersFollowNft() throws {
        let sets = SetCatalog([
            NamedSet(Name("m")!, key: [.ipv4Address, .ipv4Address], data: [.ipv4Address, .inetService], flags: [.dynamic, .timeout]),
            NamedSet(Name("s")!, key: [.ipv4Address], flags: [.dynamic]),
        ])
        let short = try Lowering.statement(.update(map: Name("m")!, key: [.saddr, .daddr], timeoutMilliseconds: 0, data: [.field(.daddr), .field(.thDport)]), family: .ip, sets: sets)
        #expect(short == [.payload(base: 1, offset: 12, length: 4, dreg: 1), .payload(base: 1, offset: 16, length: 4, dreg: 9),
                          .payload(base: 1, offset: 16, length: 4, dreg: 2), .payload(base: 2, offset: 2, length: 2, dreg: 13),
                          .dynset(op: 1, sregKey: 1, sregData: 2, set: "m", timeout: 0)])
        let plain = try Lowering.statement(.update(map: Name("s")!, key: [.saddr], timeoutMilliseconds: 60000, data: []), family: .ip, sets: sets)
        #expect(plain == [.payload(base: 1, offset: 12, length: 4, dreg: 1), .dynset(op: 1, sregKey: 1, sregData: nil, set: "s", timeout: 60_000)])
        #expect(throws: LoweringError.self) {
            try Lowering.statement(.update(map: Name("s")!, key: [.saddr], timeoutMilliseconds: 60000, data: [.field(.daddr)]), family: .ip, sets: sets)
        }
        #expect(throws: LoweringError.self) {
            try Lowering.statement(.dnatMap([.saddr], map: Name("s")!), family: .ip, sets: sets)
        }
    }

    /// `tcp dport` and `ct original proto-dst` need a `meta l4proto` match first; `th dport` after
    /// one would list (and read back) as `tcp dport`, so it is refused too.
    @Test func protocolDependencies() throws {
        let sets = Self.catalog(.ip)
        let affinity = Name("affinity")!
        let key: [Selector] = [.saddr, .ctOriginalDaddr, .l4proto, .ctOriginalProtoDst]
        #expect(throws: LoweringError.self) {
            try Lowering.rule(Rule([.update(map: affinity, key: key, timeoutMilliseconds: 1000, data: [.field(.daddr), .field(.dport(.tcp))])]), family: .ip, sets: sets)
        }
        #expect(throws: LoweringError.self) {
            try Lowering.rule(Rule([.l4proto(.udp), .update(map: affinity, key: key, timeoutMilliseconds: 1000, data: [.field(.daddr), .field(.dport(.tcp))])]), family: .ip, sets: sets)
        }
        #expect(throws: LoweringError.self) {
            try Lowering.rule(Rule([.vmap([.l4proto, .ctOriginalProtoDst], map: Name("affnp")!)]), family: .ip, sets: sets)
        }
        #expect(throws: LoweringError.self) {
            try Lowering.rule(Rule([.l4proto(.tcp), .lookup([.daddr, .thDport], set: Name("x")!)]), family: .ip, sets: sets)
        }
        // The same bytes read back as `tcp dport` after `meta l4proto tcp`, `th dport` anywhere else.
        let tcp = try Lowering.rule(Rule([.l4proto(.tcp), .lookup([.daddr, .dport(.tcp)], set: Name("x")!)]), family: .ip, sets: sets)
        #expect(Raising.rule(tcp, family: .ip, sets: sets) == [.l4proto(.tcp), .lookup([.daddr, .dport(.tcp)], set: Name("x")!)])
        #expect(Raising.rule(Array(tcp.dropFirst(2)), family: .ip, sets: sets) == [.lookup([.daddr, .thDport], set: Name("x")!)])
    }

    /// What the kernel dumps back reads as the statement: nat with the flags its registers imply
    /// (0x3), a dynset with flags 0, a byteorder only where the set is a concatenated interval set.
    @Test func kernelShapesRaise() throws {
        let sets = Self.catalog(.ip)
        let dumpedDnat: [Expression] = [.immediateData(dreg: 1, data: [10, 0, 0, 1]), .immediateData(dreg: 2, data: [0, 80]),
                                        .nat(type: 1, family: 2, addrMin: 1, protoMin: 2, flags: 3).normalized]
        #expect(Raising.rule(dumpedDnat, family: .ip, sets: sets) == [.dnat(IPAddress("10.0.0.1")!, port: 80)])
        var dumpedMap = try Lowering.statement(.dnatMap([.saddr, .daddr, .l4proto, .thDport], map: Name("affinity")!), family: .ip, sets: sets)
        dumpedMap[dumpedMap.count - 1] = Expression.nat(type: 1, family: 2, addrMin: 1, protoMin: 9, flags: 3).normalized
        #expect(Raising.rule(dumpedMap, family: .ip, sets: sets) == [.dnatMap([.saddr, .daddr, .l4proto, .thDport], map: Name("affinity")!)])
        // A lookup into fwallow without the byteorder (or into fwips with one) is not what nft writes.
        let dispatch: [Selector] = [.daddr, .l4proto, .thDport, .saddr]
        var withoutByteorder = try Lowering.statement(.notInSet(dispatch, set: Name("fwallow")!), family: .ip, sets: sets)
        withoutByteorder.remove(at: 2)
        #expect(Raising.rule(withoutByteorder, family: .ip, sets: sets) == nil)
        #expect(Raising.rule(try Lowering.statement(.lookup(dispatch, set: Name("fwallow")!), family: .ip, sets: SetCatalog()), family: .ip, sets: sets) == nil)
        // A timeout that is not whole seconds, or an add instead of an update, is foreign.
        let add: [Expression] = [.payload(base: 1, offset: 12, length: 4, dreg: 1), .dynset(op: 0, sregKey: 1, sregData: nil, set: "s", timeout: 0)]
        #expect(Raising.rule(add, family: .ip, sets: sets) == nil)
    }

    /// The hairpin buckets' dispatch, expression for expression as nft 1.0.6 compiles it
    /// (`nft --debug=netlink -f`): the whole address loaded, masked in its register, looked up:
    ///   ct status dnat ip daddr & 0.0.0.3 vmap @hairpin-buckets
    ///   ct status dnat ip6 daddr & ::1ff vmap @hairpin-buckets
    @Test func maskedAddressDispatch() throws {
        let none = SetCatalog(), map = Name("hairpin-buckets")!
        let ctStatus = try Lowering.statement(.ctStatusDNAT, family: .ip, sets: none)
        let v4 = [Statement.ctStatusDNAT, .vmap([.maskedDaddr(lowBits: 2)], map: map)]
        let v4Expressions = try Lowering.rule(Rule(v4), family: .ip, sets: none)
        #expect(v4Expressions == ctStatus + [
            .payload(base: 1, offset: 16, length: 4, dreg: 1),
            .bitwise(sreg: 1, dreg: 1, mask: [0, 0, 0, 3], xor: [0, 0, 0, 0]),  // bitwise reg 1 = ( reg 1 & 0x03000000 ) ^ 0x00000000
            .lookup(sreg: 1, dreg: 0, set: "hairpin-buckets", flags: 0),
        ])
        #expect(Raising.rule(v4Expressions, family: .ip, sets: none) == v4)
        let v6 = [Statement.ctStatusDNAT, .vmap([.maskedDaddr(lowBits: 9)], map: map)]
        let v6Expressions = try Lowering.rule(Rule(v6), family: .ip6, sets: none)
        #expect(v6Expressions == ctStatus + [
            .payload(base: 1, offset: 24, length: 16, dreg: 1),
            .bitwise(sreg: 1, dreg: 1, mask: RegisterValue(IPAddress("::1ff")!), xor: RegisterValue(zeros: 16)),
            .lookup(sreg: 1, dreg: 0, set: "hairpin-buckets", flags: 0),
        ])
        #expect(Raising.rule(v6Expressions, family: .ip6, sets: none) == v6)
        #expect(Selector.lowBitsMask(2, .ip) == IPAddress("0.0.0.3") && Selector.lowBitsMask(9, .ip6) == IPAddress("::1ff"))
        #expect(Selector.lowBitsMask(32, .ip) == IPAddress("255.255.255.255") && Selector.lowBitsMask(72, .ip6) == IPAddress("::ff:ffff:ffff:ffff:ffff"))
        // More bits than the address has, none, a masked source, a mask that is not low bits or
        // a mask with an xor are not nftproxy's.
        #expect(throws: LoweringError.self) { try Lowering.statement(.vmap([.maskedDaddr(lowBits: 33)], map: map), family: .ip, sets: none) }
        #expect(throws: LoweringError.self) { try Lowering.statement(.vmap([.maskedDaddr(lowBits: 0)], map: map), family: .ip6, sets: none) }
        var saddr = v4Expressions
        saddr[3] = .payload(base: 1, offset: 12, length: 4, dreg: 1)
        #expect(Raising.rule(saddr, family: .ip, sets: none) == nil)
        var xor = v4Expressions
        xor[4] = .bitwise(sreg: 1, dreg: 1, mask: [0, 0, 0, 3], xor: [0, 0, 0, 1])
        #expect(Raising.rule(xor, family: .ip, sets: none) == nil)
        var highBits = v4Expressions
        highBits[4] = .bitwise(sreg: 1, dreg: 1, mask: [0, 0, 0, 6], xor: [0, 0, 0, 0])
        #expect(Raising.rule(highBits, family: .ip, sets: none) == nil)
    }

    /// The NEWRULE messages of the dispatch, byte for byte as `nft --debug=mnl -f` sends them
    /// (table t, chain masquerading; `add rule ip t masquerading ct status dnat ip daddr & 0.0.0.3
    /// vmap @hairpin-buckets` and the ip6 one with `& ::1ff`), less the NFTA_LOOKUP_SET_ID nft adds
    /// to every lookup (its own run's id of the set, which the kernel needs only for a set made in
    /// the same batch; nftproxy names the set).
    @Test(arguments: [
        (Family.ip, UInt8(2),
         "0600010074000000110002006d6173717565726164696e6700000000540104802000018007000100637400001400028008000200000000020800010000000001440001800c0001006269747769736500340002800800010000000001080002000000000108000300000000040c00048008000100200000000c00058008000100000000002c00018008000100636d700020000280080001000000000108000200000000010c0003800800010000000000340001800c0001007061796c6f6164002400028008000100000000010800020000000001080003000000001008000400000000044c0001800c00010062697477697365003c00028008000100000000010800020000000001080006000000000008000300000000040c00048008000100000000030c0005800800010000000000400001800b0001006c6f6f6b757000003000028008000200000000010800030000000000140001006861697270696e2d6275636b657473000800040000000001"),
        (Family.ip6, UInt8(9),
         "0600010074000000110002006d6173717565726164696e67000000006c0104802000018007000100637400001400028008000200000000020800010000000001440001800c0001006269747769736500340002800800010000000001080002000000000108000300000000040c00048008000100200000000c00058008000100000000002c00018008000100636d700020000280080001000000000108000200000000010c0003800800010000000000340001800c0001007061796c6f616400240002800800010000000001080002000000000108000300000000180800040000000010640001800c00010062697477697365005400028008000100000000010800020000000001080006000000000008000300000000101800048014000100000000000000000000000000000001ff180005801400010000000000000000000000000000000000400001800b0001006c6f6f6b757000003000028008000200000000010800030000000000140001006861697270696e2d6275636b657473000800040000000002"),
    ])
    func maskedAddressDispatchMessageIsNfts(_ family: Family, _ bits: UInt8, _ nftHex: String) throws {
        let rule = Rule([.ctStatusDNAT, .vmap([.maskedDaddr(lowBits: bits)], map: Name("hairpin-buckets")!)])
        let ours = try payloads([.addRule(TableRef(family, Name("t")!), chain: Name("masquerading")!, rule)], sets: SetCatalog())
        let nft = withoutLookupSetIDs(hex(nftHex))
        #expect(nft.count == hex(nftHex).count - 8, "one NFTA_LOOKUP_SET_ID taken out")
        #expect(ours == [nft])
    }

    /// Set type ids and userdata, byte for byte as nft 1.0.6 writes them (`nft --debug=mnl`).
    @Test func setTypesAndUserdata() {
        #expect(KeyType.id([.ipv4Address, .inetProto, .inetService]) == 29453)
        #expect(KeyType.id([.ipv6Address, .inetProto, .inetService]) == 0x830d)
        #expect(KeyType.id([.ipv4Address, .ipv4Address]) == 455)
        #expect(KeyType.id([.ipv4Address, .inetProto, .inetService, .ipv4Address]) == 0x1cc347)
        #expect(KeyType.length([.ipv4Address, .inetProto, .inetService]) == 12)
        #expect(KeyType.length([.ipv6Address, .inetProto, .inetService]) == 24)
        #expect(KeyType.length([.inetService]) == 2)
        #expect(KeyType.types(id: 29453) == [.ipv4Address, .inetProto, .inetService])
        #expect(KeyType.types(id: 99) == nil)

        let plain = Userdata.set(NamedSet(Name("a")!, key: [.ipv4Address], comment: Comment("x")))
        #expect(plain.bytes == [0, 4, 2, 0, 0, 0, 7, 2, 0x78, 0])
        let map = Userdata.set(NamedSet(Name("m")!, key: [.ipv4Address, .inetProto, .inetService], isMap: true))
        #expect(map.bytes == [0, 4, 0, 0, 0, 0, 1, 4, 0, 0, 0, 0, 3, 8, 0, 4, 13, 0, 0, 0, 1, 0, 6, 4, 0, 0, 0, 0])
        let proto = Userdata.set(NamedSet(Name("p")!, key: [.inetProto]))
        #expect(proto.bytes == [0, 4, 0, 0, 0, 0])
        // `map m1 { type ipv4_addr : ipv4_addr; }`
        let dataMap = Userdata.set(NamedSet(Name("m1")!, key: [.ipv4Address], data: [.ipv4Address]))
        #expect(dataMap.bytes == [0, 4, 2, 0, 0, 0, 1, 4, 2, 0, 0, 0, 6, 4, 0, 0, 0, 0])
    }

    /// The NEWSET messages of a data map with size and flags and of a concatenated interval set,
    /// attribute for attribute as `nft --debug=mnl -f` sends them (NFTA_SET_* after the nfgenmsg):
    ///   map affinity { type ipv4_addr . ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service;
    ///                  size 1048576; flags dynamic,timeout; comment "c"; }
    ///   set fw { type ipv4_addr . inet_proto . inet_service . ipv4_addr; flags interval; comment "allowed"; }
    /// and the same with ipv6_addr, as the first and second set of a batch.
    @Test(arguments: [
        (Family.ip,
         "06000100740000000d000200616666696e69747900000000080003000000003808000400001c730d080005000000001008000600000001cd080007000000000808000a00000000010c00098008000100001000002e000d00000400000000010400000000030800040d0000000100040800040d0000000100060400000000070263000000",
         "06000100740000000700020066770000080003000000008408000400001cc347080005000000001008000a000000000238000980340002800c00018008000100000000040c00018008000100000000010c00018008000100000000020c00018008000100000000041e000d00000400000000030800040d00000001000708616c6c6f776564000000"),
        (Family.ip6,
         "06000100740000000d000200616666696e697479000000000800030000000038080004000020830d0800050000000028080006000000020d080007000000001408000a00000000030c00098008000100001000002e000d00000400000000010400000000030800040d0000000100040800040d0000000100060400000000070263000000",
         "060001007400000007000200667700000800030000000084080004000020c348080005000000002808000a000000000438000980340002800c00018008000100000000100c00018008000100000000010c00018008000100000000020c00018008000100000000101e000d00000400000000030800040d00000001000708616c6c6f776564000000"),
    ])
    func setMessagesAreNfts(_ family: Family, _ affinityHex: String, _ firewallHex: String) throws {
        let address = DataType.address(family)
        let ref = TableRef(family, Name("t")!)
        let affinity = NamedSet(Name("affinity")!, key: [address, address, .inetProto, .inetService], data: [address, .inetService],
                                flags: [.dynamic, .timeout], size: 1 << 20, comment: Comment("c"))
        let firewall = NamedSet(Name("fw")!, key: [address, .inetProto, .inetService, address], flags: [.interval], comment: Comment("allowed"))
        // nft numbers the sets of a batch from 1 in ip and went on counting in ip6 (its ids are per run).
        let firstID: UInt32 = family == .ip ? 1 : 3
        let messages = try payloads([.addSet(ref, affinity), .addSet(ref, firewall)], sets: SetCatalog(), firstSetID: firstID)
        #expect(messages == [hex(affinityHex), hex(firewallHex)])
    }

    /// NEWSETELEM and DELSETELEM element lists as `nft --debug=mnl` sends them: pipapo elements
    /// with KEY and an inclusive KEY_END (equal for an exact address), also when deleted, and
    /// data map elements with DATA, deleted by key alone:
    ///   add element ip t fw { 203.0.113.1 . tcp . 80 . 10.0.0.0/8, 203.0.113.1 . udp . 53 . 192.168.1.1 }
    ///   delete element ip t fw { 203.0.113.1 . tcp . 80 . 10.0.0.0/8 }
    ///   add element ip t affinity { 10.0.0.2 . 10.96.0.10 . tcp . 80 : 10.244.1.5 . 8080 }
    ///   delete element ip t affinity { 10.0.0.2 . 10.96.0.10 . tcp . 80 }
    ///   add element ip6 t fw { 2001:db8::1 . tcp . 80 . fd00::/64, 2001:db8::1 . udp . 53 . 2001:db8::5 }
    ///   add element ip6 t affinity { fd00::2 . fd00:96::10 . tcp . 80 : fd00:244::5 . 8080 }
    /// nft also sends NFTA_SET_ELEM_LIST_SET_ID, which the kernel only needs for a set created in
    /// the same batch and which nftproxy leaves out; the lists are compared without it.
    @Test func elementMessagesAreNfts() throws {
        func ip(_ text: String) -> KeyValue { .address(IPAddress(text)!) }
        func range(_ text: String) -> KeyValue { .prefix(CIDR(text)!) }
        let v4 = TableRef(.ip, Name("t")!), v6 = TableRef(.ip6, Name("t")!)
        let fw = Name("fw")!, affinity = Name("affinity")!
        let sets4 = Self.catalog(.ip), sets6 = Self.catalog(.ip6)
        var sets = [v4: SetCatalog(), v6: SetCatalog()]
        for (ref, catalog) in [(v4, sets4), (v6, sets6)] {
            for name in catalog.names {
                var set = catalog[name]!
                if name.rawValue == "fwallow" { set.name = fw }
                sets[ref]!.add(set)
            }
        }
        let cases: [(Operation, String)] = [
            (.addElements(v4, set: fw, [Element([ip("203.0.113.1"), .proto(.tcp), .port(80), range("10.0.0.0/8")]),
                                        Element([ip("203.0.113.1"), .proto(.udp), .port(53), range("192.168.1.1/32")])]),
             "0600010074000000070002006677000008000400000000026c000380340001801800018014000100cb00710106000000005000000a00000018000a8014000100cb00710106000000005000000affffff340002801800018014000100cb0071011100000000350000c0a8010118000a8014000100cb0071011100000000350000c0a80101"),
            (.deleteElements(v4, set: fw, [Element([ip("203.0.113.1"), .proto(.tcp), .port(80), range("10.0.0.0/8")])]),
             "0600010074000000070002006677000038000380340001801800018014000100cb00710106000000005000000a00000018000a8014000100cb00710106000000005000000affffff"),
            (.addElements(v4, set: affinity, [Element([ip("10.0.0.2"), ip("10.96.0.10"), .proto(.tcp), .port(80)], data: [ip("10.244.1.5"), .port(8080)])]),
             "06000100740000000d000200616666696e697479000000000800040000000001300003802c00018018000180140001000a0000020a60000a0600000000500000100002800c0001000af401051f900000"),
            (.deleteElements(v4, set: affinity, [Element([ip("10.0.0.2"), ip("10.96.0.10"), .proto(.tcp), .port(80)], data: [ip("10.244.1.5"), .port(8080)])]),
             "06000100740000000d000200616666696e69747900000000200003801c00018018000180140001000a0000020a60000a0600000000500000"),
            (.addElements(v6, set: fw, [Element([ip("2001:db8::1"), .proto(.tcp), .port(80), range("fd00::/64")]),
                                        Element([ip("2001:db8::1"), .proto(.udp), .port(53), ip("2001:db8::5")])]),
             "060001007400000007000200667700000800040000000004cc00038064000180300001802c00010020010db80000000000000000000000010600000000500000fd00000000000000000000000000000030000a802c00010020010db80000000000000000000000010600000000500000fd00000000000000ffffffffffffffff64000280300001802c00010020010db8000000000000000000000001110000000035000020010db800000000000000000000000530000a802c00010020010db8000000000000000000000001110000000035000020010db8000000000000000000000005"),
            (.addElements(v6, set: affinity, [Element([ip("fd00::2"), ip("fd00:96::10"), .proto(.tcp), .port(80)], data: [ip("fd00:244::5"), .port(8080)])]),
             "06000100740000000d000200616666696e6974790000000008000400000000035400038050000180300001802c000100fd000000000000000000000000000002fd00009600000000000000000000001006000000005000001c00028018000100fd0002440000000000000000000000051f900000"),
        ]
        for (operation, nft) in cases {
            let ours = try payloads([operation], sets: sets[operation.table]!)
            let setID: UInt16 = 4  // NFTA_SET_ELEM_LIST_SET_ID
            #expect(ours == [attributes(hex(nft)).filter { $0.type != setID }.flatMap(\.bytes)], "\(operation.summary)")
        }
    }

    @Test func elementKeysArePaddedInConcatenations() throws {
        let key: [KeyValue] = [.address(IPAddress("10.96.0.10")!), .proto(.tcp), .port(53)]
        let bytes = try ElementKey.encode(key)
        #expect(bytes == [10, 96, 0, 10, 6, 0, 0, 0, 0, 53, 0, 0])
        #expect(ElementKey.decode(bytes, types: [.ipv4Address, .inetProto, .inetService]) == key)
        #expect(try ElementKey.encode([.port(8080)]) == [0x1f, 0x90])
        #expect(ElementKey.decode([10, 96, 0, 10, 6, 1, 0, 0, 0, 53, 0, 0], types: [.ipv4Address, .inetProto, .inetService]) == nil)
    }

    /// Ranges in a concatenated interval set: each field's first and last value, any field may be
    /// a prefix; anything else (a port range, a range that is no prefix) does not decode.
    @Test func elementRangesRoundTrip() throws {
        let types: [DataType] = [.ipv4Address, .inetProto, .inetService, .ipv4Address]
        let key: [KeyValue] = [.prefix(CIDR("10.0.0.0/8")!), .proto(.sctp), .port(9), .prefix(CIDR("192.0.2.128/25")!)]
        let (low, high) = try ElementKey.range(key)
        #expect(low == [10, 0, 0, 0, 132, 0, 0, 0, 0, 9, 0, 0, 192, 0, 2, 128])
        #expect(high == [10, 255, 255, 255, 132, 0, 0, 0, 0, 9, 0, 0, 192, 0, 2, 255])
        #expect(ElementKey.decode(low: low, high: high, types: types) == key)
        #expect(ElementKey.decode(low: low, high: low, types: types) == [.address(IPAddress("10.0.0.0")!), .proto(.sctp), .port(9), .address(IPAddress("192.0.2.128")!)])
        var portRange = high
        portRange[10] = 0x10
        #expect(ElementKey.decode(low: low, high: portRange, types: types) == nil)
        var notAPrefix = high
        notAPrefix[15] = 0xfe
        #expect(ElementKey.decode(low: low, high: notAPrefix, types: types) == nil)
        let v6 = try ElementKey.range([.prefix(CIDR("fd00::/64")!), .proto(.tcp)])
        #expect(ElementKey.decode(low: v6.low, high: v6.high, types: [.ipv6Address, .inetProto]) == [.prefix(CIDR("fd00::/64")!), .proto(.tcp)])
        // Outside an interval set a range has nowhere to go; a one-address range is the address.
        #expect(throws: LoweringError.self) { try ElementKey.encode([.prefix(CIDR("10.0.0.0/8")!), .port(1)]) }
        #expect(Element([.prefix(CIDR("10.1.2.3/32")!), .port(1)]) == Element([.address(IPAddress("10.1.2.3")!), .port(1)]))
    }

    @Test func foreignShapesAreRefused() {
        let none = SetCatalog()
        // `tcp dport 22`: a 1-byte l4proto compare then a port compare — not a statement nftproxy writes.
        let expressions: [Expression] = [.meta(key: 16, dreg: 1), .cmp(sreg: 1, op: 0, data: [6]),
                                         .payload(base: 2, offset: 2, length: 2, dreg: 1), .cmp(sreg: 1, op: 0, data: [0, 22])]
        #expect(Raising.rule(expressions, family: .ip, sets: none) == nil)
        #expect(Raising.rule([.unsupported("counter")], family: .ip, sets: none) == nil)
        // A 4-byte l4proto compare works in the kernel but is not nft's shape.
        #expect(Raising.rule([.meta(key: 16, dreg: 1), .cmp(sreg: 1, op: 0, data: [6, 0, 0, 0])], family: .ip, sets: none) == nil)
    }

    @Test func priorityNames() {
        #expect(PriorityName.priority(-100, type: .nat, hook: .prerouting) == Priority(.dstnat))
        #expect(PriorityName.priority(-110, type: .nat, hook: .output) == Priority(.dstnat, -10))
        #expect(PriorityName.priority(100, type: .nat, hook: .postrouting) == Priority(.srcnat))
        #expect(PriorityName.priority(0, type: .filter, hook: .forward) == Priority(.filter))
        #expect(PriorityName.priority(-300, type: .filter, hook: .prerouting) == Priority(.raw))
    }

    // MARK: - Helpers

    /// The attributes (after the 20-byte nlmsghdr + nfgenmsg) of each object message `operations` make.
    private func payloads(_ operations: [Operation], sets: SetCatalog, firstSetID: UInt32 = 1) throws -> [[UInt8]] {
        let batch = try Batch(firstSeq: 1)
        var setID = firstSetID
        for (index, operation) in operations.enumerated() {
            try Writer.add(operation, index: index, to: batch, nextSetID: &setID, sets: sets)
        }
        return batch.messages.dropFirst().map { Array($0.dropFirst(20)) }  // BATCH_BEGIN; no END yet
    }

    private func hex(_ text: String) -> [UInt8] {
        var out: [UInt8] = []
        var index = text.startIndex
        while index < text.endIndex {
            let next = text.index(index, offsetBy: 2)
            out.append(UInt8(text[index..<next], radix: 16)!)
            index = next
        }
        return out
    }

    /// Rule attributes without NFTA_LOOKUP_SET_ID (4) in the data (NFTA_EXPR_DATA, 2) of each
    /// lookup expression of NFTA_RULE_EXPRESSIONS (4), the nests' lengths written anew.
    private func withoutLookupSetIDs(_ bytes: [UInt8]) -> [UInt8] {
        func nest(_ original: [UInt8], _ content: [UInt8]) -> [UInt8] {
            let length = UInt16(4 + content.count)
            return [UInt8(length & 0xff), UInt8(length >> 8), original[2], original[3]] + content
        }
        return attributes(bytes).flatMap { top in
            guard top.type == 4 else { return top.bytes }
            return nest(top.bytes, attributes(Array(top.bytes.dropFirst(4))).flatMap { element in
                let parts = attributes(Array(element.bytes.dropFirst(4)))
                let isLookup = parts.contains { $0.type == 1 && $0.bytes.count >= 10 && Array($0.bytes[4..<10]) == Array("lookup".utf8) }
                return nest(element.bytes, parts.flatMap { part in
                    guard isLookup, part.type == 2 else { return part.bytes }
                    return nest(part.bytes, attributes(Array(part.bytes.dropFirst(4))).filter { $0.type != 4 }.flatMap(\.bytes))
                })
            })
        }
    }

    /// Top-level netlink attributes: (type without flags, all bytes including header and padding).
    private func attributes(_ bytes: [UInt8]) -> [(type: UInt16, bytes: [UInt8])] {
        var out: [(UInt16, [UInt8])] = []
        var offset = 0
        while offset + 4 <= bytes.count {
            let length = Int(UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8)
            let type = (UInt16(bytes[offset + 2]) | UInt16(bytes[offset + 3]) << 8) & 0x3fff
            let padded = min((length + 3) & ~3, bytes.count - offset)
            out.append((type, Array(bytes[offset..<(offset + padded)])))
            offset += padded
        }
        return out
    }
}
