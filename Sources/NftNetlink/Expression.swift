import NftIR
import ServiceModel

/// One nf_tables expression, with exactly the attributes nft 1.0.6 sends and the kernel dumps
/// back (after the normalisation in `Expression.init(_:)`), so a lowered rule and a dumped one
/// compare with `==`.
///
/// Register numbers are the wire numbers nft uses: a value that starts on a 16-byte boundary
/// is named by its legacy register (NFT_REG_1 = 1, NFT_REG_2 = 2 …), any other 4-byte slot by
/// NFT_REG32_xx (8 + slot). The kernel dumps registers in the same notation.
enum Expression: Hashable, CustomStringConvertible {
    /// `payload load LENb @ BASE header + OFFSET => reg DREG`
    case payload(base: UInt32, offset: UInt32, length: UInt32, dreg: UInt32)
    /// `meta load KEY => reg DREG`
    case meta(key: UInt32, dreg: UInt32)
    /// `meta set KEY with reg SREG`
    case metaSet(key: UInt32, sreg: UInt32)
    /// `ct load KEY => reg DREG` (no direction)
    case ct(key: UInt32, dreg: UInt32)
    /// `fib FLAGS RESULT => reg DREG`
    case fib(flags: UInt32, result: UInt32, dreg: UInt32)
    /// `cmp OP reg SREG DATA`
    case cmp(sreg: UInt32, op: UInt32, data: [UInt8])
    /// `bitwise reg DREG = (reg SREG & MASK) ^ XOR`; the length is the mask's.
    case bitwise(sreg: UInt32, dreg: UInt32, mask: [UInt8], xor: [UInt8])
    /// `lookup reg SREG set NAME [dreg DREG]`; dreg 0 (NFT_REG_VERDICT) makes it a vmap.
    case lookup(sreg: UInt32, dreg: UInt32?, set: String, flags: UInt32)
    /// `numgen reg DREG = TYPE mod MODULUS offset OFFSET`
    case numgen(dreg: UInt32, modulus: UInt32, type: UInt32, offset: UInt32)
    /// `immediate reg DREG DATA`
    case immediateData(dreg: UInt32, data: [UInt8])
    /// `immediate reg 0 VERDICT [-> CHAIN]`
    case immediateVerdict(code: Int32, chain: String?)
    /// `nat TYPE FAMILY addr_min reg A proto_min reg P flags F` (max registers equal to min).
    case nat(type: UInt32, family: UInt32, addrMin: UInt32, protoMin: UInt32, flags: UInt32)
    /// `masq [flags F]`, 0 = no flags attribute.
    case masq(flags: UInt32)
    /// `reject type T code C`
    case reject(type: UInt32, code: UInt8)
    /// Anything else, named for the error message.
    case unsupported(String)

    var description: String {
        func hex(_ bytes: [UInt8]) -> String { "0x" + bytes.map { byte in String(byte, radix: 16).leftPadded(2) }.joined() }
        switch self {
        case .payload(let base, let offset, let length, let dreg): return "payload load \(length)b @ base \(base) + \(offset) => reg \(dreg)"
        case .meta(let key, let dreg): return "meta load \(key) => reg \(dreg)"
        case .metaSet(let key, let sreg): return "meta set \(key) with reg \(sreg)"
        case .ct(let key, let dreg): return "ct load \(key) => reg \(dreg)"
        case .fib(let flags, let result, let dreg): return "fib flags \(flags) result \(result) => reg \(dreg)"
        case .cmp(let sreg, let op, let data): return "cmp op \(op) reg \(sreg) \(hex(data))"
        case .bitwise(let sreg, let dreg, let mask, let xor): return "bitwise reg \(dreg) = (reg \(sreg) & \(hex(mask))) ^ \(hex(xor))"
        case .lookup(let sreg, let dreg, let set, let flags):
            return "lookup reg \(sreg) set \(set)" + (dreg.map { " dreg \($0)" } ?? "") + (flags == 0 ? "" : " flags \(flags)")
        case .numgen(let dreg, let modulus, let type, let offset): return "numgen reg \(dreg) = type \(type) mod \(modulus) offset \(offset)"
        case .immediateData(let dreg, let data): return "immediate reg \(dreg) \(hex(data))"
        case .immediateVerdict(let code, let chain): return "immediate verdict \(code)" + (chain.map { " -> \($0)" } ?? "")
        case .nat(let type, let family, let addr, let proto, let flags): return "nat type \(type) family \(family) addr_min reg \(addr) proto_min reg \(proto) flags \(flags)"
        case .masq(let flags): return "masq flags \(flags)"
        case .reject(let type, let code): return "reject type \(type) code \(code)"
        case .unsupported(let name): return "\(name) (not an expression nftproxy writes)"
        }
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}

/// Why a statement, set or element cannot be expressed in netlink.
struct LoweringError: Error {
    var message: String
}

/// Register numbering as nft's `netlink_put_register` writes it.
enum Register {
    /// Wire number of the 4-byte slot `index` (0 = the first byte of NFT_REG_1).
    static func number(slot index: Int) -> UInt32 {
        index % 4 == 0 ? K.reg1 + UInt32(index / 4) : K.reg32_00 + UInt32(index)
    }

    /// 4-byte slots a value of `length` bytes occupies.
    static func slots(_ length: Int) -> Int { (length + 3) / 4 }
}

/// Statement → expressions, exactly as `nft -f` compiles the text NftText renders.
enum Lowering {
    static func addressOffset(_ selector: Selector, _ family: Family) -> UInt32? {
        switch (selector, family) {
        case (.saddr, .ip): 12
        case (.daddr, .ip): 16
        case (.saddr, .ip6): 8
        case (.daddr, .ip6): 24
        default: nil
        }
    }

    /// Loads `selector` into slot `slot`; returns the expression and the slots it occupies.
    static func load(_ selector: Selector, family: Family, slot: Int) -> (Expression, Int) {
        let dreg = Register.number(slot: slot)
        switch selector {
        case .saddr, .daddr:
            let length = family.ipFamily.addressLength
            return (.payload(base: K.networkHeader, offset: addressOffset(selector, family)!, length: UInt32(length), dreg: dreg), Register.slots(length))
        case .l4proto:
            return (.meta(key: K.metaL4proto, dreg: dreg), 1)
        case .thDport:
            return (.payload(base: K.transportHeader, offset: 2, length: 2, dreg: dreg), 1)
        }
    }

    /// Loads a concatenation into consecutive slots from NFT_REG_1, as nft does for a lookup key.
    static func concatenation(_ selectors: [Selector], family: Family) throws(LoweringError) -> [Expression] {
        guard !selectors.isEmpty else { throw LoweringError(message: "a lookup needs at least one selector") }
        var slot = 0
        var out: [Expression] = []
        for selector in selectors {
            let (expression, used) = load(selector, family: family, slot: slot)
            out.append(expression)
            slot += used
        }
        guard slot <= 16 else { throw LoweringError(message: "a concatenation of \(selectors.count) fields does not fit the 64-byte register file") }
        return out
    }

    static func hostU32(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }

    static func statement(_ statement: Statement, family: Family) throws(LoweringError) -> [Expression] {
        let reg1 = K.reg1
        switch statement {
        case .address(let selector, let cidr, let negated):
            guard let offset = addressOffset(selector, family) else {
                throw LoweringError(message: "an address match needs saddr or daddr, not \(selector)")
            }
            guard cidr.family == family.ipFamily else {
                throw LoweringError(message: "\(cidr) is not an address of the \(family.rawValue) family")
            }
            let op = negated ? K.cmpNeq : K.cmpEq
            let length = cidr.address.bytes.count
            let prefix = cidr.prefixLength
            if prefix == length * 8 {
                return [.payload(base: K.networkHeader, offset: offset, length: UInt32(length), dreg: reg1),
                        .cmp(sreg: reg1, op: op, data: cidr.address.bytes)]
            }
            if prefix > 0 && prefix % 8 == 0 {
                // nft trims a byte-aligned prefix to a shorter load.
                let bytes = prefix / 8
                return [.payload(base: K.networkHeader, offset: offset, length: UInt32(bytes), dreg: reg1),
                        .cmp(sreg: reg1, op: op, data: Array(cidr.address.bytes.prefix(bytes)))]
            }
            return [.payload(base: K.networkHeader, offset: offset, length: UInt32(length), dreg: reg1),
                    .bitwise(sreg: reg1, dreg: reg1, mask: cidr.maskBytes, xor: [UInt8](repeating: 0, count: length)),
                    .cmp(sreg: reg1, op: op, data: cidr.address.bytes)]
        case .l4proto(let proto):
            return [.meta(key: K.metaL4proto, dreg: reg1), .cmp(sreg: reg1, op: K.cmpEq, data: [proto.number])]
        case .ctStateNew:
            return [.ct(key: K.ctState, dreg: reg1),
                    .bitwise(sreg: reg1, dreg: reg1, mask: hostU32(K.ctStateNewBit), xor: hostU32(0)),
                    .cmp(sreg: reg1, op: K.cmpNeq, data: hostU32(0))]
        case .ctStatusDNAT:
            return [.ct(key: K.ctStatus, dreg: reg1),
                    .bitwise(sreg: reg1, dreg: reg1, mask: hostU32(K.ctStatusDstNAT), xor: hostU32(0)),
                    .cmp(sreg: reg1, op: K.cmpNeq, data: hostU32(0))]
        case .fibLocal(let address):
            return [.fib(flags: address == .saddr ? K.fibSaddr : K.fibDaddr, result: K.fibAddrtype, dreg: reg1),
                    .cmp(sreg: reg1, op: K.cmpEq, data: hostU32(K.rtnLocal))]
        case .lookup(let selectors, let set):
            return try concatenation(selectors, family: family) + [.lookup(sreg: reg1, dreg: nil, set: set.rawValue, flags: 0)]
        case .vmap(let selectors, let map):
            return try concatenation(selectors, family: family) + [.lookup(sreg: reg1, dreg: K.regVerdict, set: map.rawValue, flags: 0)]
        case .numgenIncZero(let modulus):
            guard modulus > 0 else { throw LoweringError(message: "numgen modulus must be at least 1") }
            return [.numgen(dreg: reg1, modulus: modulus, type: K.numgenIncremental, offset: 0),
                    .cmp(sreg: reg1, op: K.cmpEq, data: hostU32(0))]
        case .markBitClear(let bit):
            return [.meta(key: K.metaMark, dreg: reg1),
                    .bitwise(sreg: reg1, dreg: reg1, mask: hostU32(bit), xor: hostU32(0)),
                    .cmp(sreg: reg1, op: K.cmpEq, data: hostU32(0))]
        case .setMarkBit(let bit):
            return [.meta(key: K.metaMark, dreg: reg1),
                    .bitwise(sreg: reg1, dreg: reg1, mask: hostU32(~bit), xor: hostU32(bit)),
                    .metaSet(key: K.metaMark, sreg: reg1)]
        case .toggleMarkBit(let bit):
            return [.meta(key: K.metaMark, dreg: reg1),
                    .bitwise(sreg: reg1, dreg: reg1, mask: hostU32(0xffff_ffff), xor: hostU32(bit)),
                    .metaSet(key: K.metaMark, sreg: reg1)]
        case .dnat(let ip, let port):
            guard ip.family == family.ipFamily else {
                throw LoweringError(message: "dnat to \(ip) in a \(family.rawValue) table")
            }
            // nft gives the address a whole 16-byte register, so the port lands in NFT_REG_2.
            return [.immediateData(dreg: reg1, data: ip.bytes),
                    .immediateData(dreg: K.reg2, data: [UInt8(port >> 8), UInt8(port & 0xff)]),
                    .nat(type: K.natDNAT, family: UInt32(family.nfproto), addrMin: reg1, protoMin: K.reg2, flags: K.natProtoSpecified)]
        case .masquerade(let fullyRandom):
            return [.masq(flags: fullyRandom ? K.natRandomFully : 0)]
        case .reject:
            return [.reject(type: K.rejectICMPUnreach, code: family == .ip ? K.icmpPortUnreach : K.icmpv6PortUnreach)]
        case .verdict(let verdict):
            return [verdictExpression(verdict)]
        }
    }

    static func verdictExpression(_ verdict: Verdict) -> Expression {
        switch verdict {
        case .accept: .immediateVerdict(code: K.verdictAccept, chain: nil)
        case .drop: .immediateVerdict(code: K.verdictDrop, chain: nil)
        case .return: .immediateVerdict(code: K.verdictReturn, chain: nil)
        case .jump(let chain): .immediateVerdict(code: K.verdictJump, chain: chain.rawValue)
        case .goto(let chain): .immediateVerdict(code: K.verdictGoto, chain: chain.rawValue)
        }
    }

    static func rule(_ rule: Rule, family: Family) throws(LoweringError) -> [Expression] {
        var out: [Expression] = []
        for statement in rule.statements { out += try self.statement(statement, family: family) }
        return out
    }
}
