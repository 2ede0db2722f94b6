import NftIR
@testable import NftNetlink
import ServiceModel
import Testing

/// The pure parts of the lowering: no kernel, no root.
struct LoweringTests {
    @Test(arguments: Family.allCases)
    func everyStatementRaisesBackToItself(_ family: Family) throws {
        for chain in Samples.table(family).chains {
            for rule in chain.rules {
                let expressions = try Lowering.rule(rule, family: family)
                #expect(Raising.rule(expressions, family: family) == rule.statements, "\(rule.statements)")
            }
        }
    }

    /// The register layout of nft's `netlink_put_register`: a value starting on a 16-byte
    /// boundary uses the legacy register, others NFT_REG32_xx.
    @Test func concatenationRegisters() throws {
        let v4 = try Lowering.statement(.vmap([.daddr, .l4proto, .thDport], map: Name("m")!), family: .ip)
        #expect(v4 == [.payload(base: 1, offset: 16, length: 4, dreg: 1), .meta(key: 16, dreg: 9),
                       .payload(base: 2, offset: 2, length: 2, dreg: 10), .lookup(sreg: 1, dreg: 0, set: "m", flags: 0)])
        let v6 = try Lowering.statement(.lookup([.saddr, .daddr], set: Name("h")!), family: .ip6)
        #expect(v6 == [.payload(base: 1, offset: 8, length: 16, dreg: 1), .payload(base: 1, offset: 24, length: 16, dreg: 2),
                       .lookup(sreg: 1, dreg: nil, set: "h", flags: 0)])
        let v6vmap = try Lowering.statement(.vmap([.daddr, .l4proto, .thDport], map: Name("m")!), family: .ip6)
        #expect(v6vmap.map(\.description).joined(separator: "; ").contains("reg 13"))
    }

    /// Prefixes as nft compiles them: byte-aligned ones load fewer bytes, others are masked.
    @Test func prefixShapes() throws {
        let slash8 = try Lowering.statement(.address(.saddr, CIDR("10.0.0.0/8")!, negated: false), family: .ip)
        #expect(slash8 == [.payload(base: 1, offset: 12, length: 1, dreg: 1), .cmp(sreg: 1, op: 0, data: [10])])
        let slash12 = try Lowering.statement(.address(.daddr, CIDR("172.16.0.0/12")!, negated: true), family: .ip)
        #expect(slash12 == [.payload(base: 1, offset: 16, length: 4, dreg: 1),
                            .bitwise(sreg: 1, dreg: 1, mask: [0xff, 0xf0, 0, 0], xor: [0, 0, 0, 0]),
                            .cmp(sreg: 1, op: 1, data: [172, 16, 0, 0])])
        #expect(throws: LoweringError.self) { try Lowering.statement(.address(.l4proto, CIDR("10.0.0.0/8")!, negated: false), family: .ip) }
        #expect(throws: LoweringError.self) { try Lowering.statement(.address(.saddr, CIDR("fd00::/8")!, negated: false), family: .ip) }
    }

    /// Set type ids and userdata, byte for byte as nft 1.0.6 writes them (`nft --debug=mnl`).
    @Test func setTypesAndUserdata() {
        #expect(KeyType.id([.ipv4Address, .inetProto, .inetService]) == 29453)
        #expect(KeyType.id([.ipv6Address, .inetProto, .inetService]) == 0x830d)
        #expect(KeyType.id([.ipv4Address, .ipv4Address]) == 455)
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
    }

    @Test func elementKeysArePaddedInConcatenations() throws {
        let key: [KeyValue] = [.address(IPAddress("10.96.0.10")!), .proto(.tcp), .port(53)]
        let bytes = try ElementKey.encode(key)
        #expect(bytes == [10, 96, 0, 10, 6, 0, 0, 0, 0, 53, 0, 0])
        #expect(ElementKey.decode(bytes, types: [.ipv4Address, .inetProto, .inetService]) == key)
        #expect(try ElementKey.encode([.port(8080)]) == [0x1f, 0x90])
        #expect(ElementKey.decode([10, 96, 0, 10, 6, 1, 0, 0, 0, 53, 0, 0], types: [.ipv4Address, .inetProto, .inetService]) == nil)
    }

    @Test func foreignShapesAreRefused() {
        // `tcp dport 22`: a 1-byte l4proto compare then a port compare — not a statement nftproxy writes.
        let expressions: [Expression] = [.meta(key: 16, dreg: 1), .cmp(sreg: 1, op: 0, data: [6]),
                                         .payload(base: 2, offset: 2, length: 2, dreg: 1), .cmp(sreg: 1, op: 0, data: [0, 22])]
        #expect(Raising.rule(expressions, family: .ip) == nil)
        #expect(Raising.rule([.unsupported("counter")], family: .ip) == nil)
        // A 4-byte l4proto compare works in the kernel but is not nft's shape.
        #expect(Raising.rule([.meta(key: 16, dreg: 1), .cmp(sreg: 1, op: 0, data: [6, 0, 0, 0])], family: .ip) == nil)
    }

    @Test func priorityNames() {
        #expect(PriorityName.priority(-100, type: .nat, hook: .prerouting) == Priority(.dstnat))
        #expect(PriorityName.priority(-110, type: .nat, hook: .output) == Priority(.dstnat, -10))
        #expect(PriorityName.priority(100, type: .nat, hook: .postrouting) == Priority(.srcnat))
        #expect(PriorityName.priority(0, type: .filter, hook: .forward) == Priority(.filter))
        #expect(PriorityName.priority(-300, type: .filter, hook: .prerouting) == Priority(.raw))
    }
}
