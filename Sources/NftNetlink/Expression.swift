import NftIR
import ServiceModel

/// One nf_tables expression, with exactly the attributes nft 1.0.6 sends and the kernel dumps
/// back (after the normalisation in `ExpressionCodec.read` and `normalized`), so a lowered rule
/// and a dumped one compare with `==`.
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
    /// `ct load KEY => reg DREG [, dir DIRECTION]`
    case ct(key: UInt32, dreg: UInt32, direction: UInt8?)
    /// `fib FLAGS RESULT => reg DREG`
    case fib(flags: UInt32, result: UInt32, dreg: UInt32)
    /// `cmp OP reg SREG DATA`
    case cmp(sreg: UInt32, op: UInt32, data: [UInt8])
    /// `bitwise reg DREG = (reg SREG & MASK) ^ XOR`; the length is the mask's.
    case bitwise(sreg: UInt32, dreg: UInt32, mask: [UInt8], xor: [UInt8])
    /// `byteorder reg DREG = OP(reg SREG, SIZE, LENGTH)`
    case byteorder(sreg: UInt32, dreg: UInt32, op: UInt32, length: UInt32, size: UInt32)
    /// `lookup reg SREG set NAME [dreg DREG] [FLAGS]`; dreg 0 (NFT_REG_VERDICT) makes it a vmap.
    case lookup(sreg: UInt32, dreg: UInt32?, set: String, flags: UInt32)
    /// `dynset OP reg_key SREG_KEY set NAME [sreg_data SREG_DATA] [timeout MS]`; timeout 0 = none.
    case dynset(op: UInt32, sregKey: UInt32, sregData: UInt32?, set: String, timeout: UInt64)
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
        case .ct(let key, let dreg, let direction): return "ct load \(key) => reg \(dreg)" + (direction.map { " , dir \($0)" } ?? "")
        case .fib(let flags, let result, let dreg): return "fib flags \(flags) result \(result) => reg \(dreg)"
        case .cmp(let sreg, let op, let data): return "cmp op \(op) reg \(sreg) \(hex(data))"
        case .bitwise(let sreg, let dreg, let mask, let xor): return "bitwise reg \(dreg) = (reg \(sreg) & \(hex(mask))) ^ \(hex(xor))"
        case .byteorder(let sreg, let dreg, let op, let length, let size): return "byteorder reg \(dreg) = op \(op)(reg \(sreg), \(size), \(length))"
        case .lookup(let sreg, let dreg, let set, let flags):
            return "lookup reg \(sreg) set \(set)" + (dreg.map { " dreg \($0)" } ?? "") + (flags == 0 ? "" : " flags \(flags)")
        case .dynset(let op, let sregKey, let sregData, let set, let timeout):
            return "dynset op \(op) reg_key \(sregKey) set \(set)" + (sregData.map { " sreg_data \($0)" } ?? "") + (timeout == 0 ? "" : " timeout \(timeout)ms")
        case .numgen(let dreg, let modulus, let type, let offset): return "numgen reg \(dreg) = type \(type) mod \(modulus) offset \(offset)"
        case .immediateData(let dreg, let data): return "immediate reg \(dreg) \(hex(data))"
        case .immediateVerdict(let code, let chain): return "immediate verdict \(code)" + (chain.map { " -> \($0)" } ?? "")
        case .nat(let type, let family, let addr, let proto, let flags): return "nat type \(type) family \(family) addr_min reg \(addr) proto_min reg \(proto) flags \(flags)"
        case .masq(let flags): return "masq flags \(flags)"
        case .reject(let type, let code): return "reject type \(type) code \(code)"
        case .unsupported(let name): return "\(name) (not an expression nftproxy writes)"
        }
    }

    /// The expression as the kernel dumps it back: nat gains NF_NAT_RANGE_MAP_IPS and
    /// NF_NAT_RANGE_PROTO_SPECIFIED whenever it has an address or a port register, whether nft
    /// sent them (`dnat to 10.0.0.1:80`) or not (`dnat to … map @m`), so those two bits say nothing.
    var normalized: Expression {
        guard case .nat(let type, let family, let addrMin, let protoMin, var flags) = self else { return self }
        if addrMin != 0 { flags &= ~K.natMapIPs }
        if protoMin != 0 { flags &= ~K.natProtoSpecified }
        return .nat(type: type, family: family, addrMin: addrMin, protoMin: protoMin, flags: flags)
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
    /// The register file: 16 four-byte slots (NFT_REG32_00 … NFT_REG32_15).
    static let slotCount = 16

    /// Wire number of the 4-byte slot `index` (0 = the first byte of NFT_REG_1).
    static func number(slot index: Int) -> UInt32 {
        index % 4 == 0 ? K.reg1 + UInt32(index / 4) : K.reg32_00 + UInt32(index)
    }

    /// The slot a wire register number starts at; nil for the verdict register or a bad number.
    static func slot(_ number: UInt32) -> Int? {
        switch number {
        case K.reg1..<(K.reg1 + 4): Int(number - K.reg1) * 4
        case K.reg32_00..<(K.reg32_00 + UInt32(slotCount)): Int(number - K.reg32_00)
        default: nil
        }
    }

    /// 4-byte slots a value of `length` bytes occupies.
    static func slots(_ length: Int) -> Int { (length + 3) / 4 }
}

/// The definitions of the sets a table's rules and elements name. nft compiles a lookup into a
/// concatenated interval set, and that set's elements, differently from the others, and the
/// statements and elements themselves do not say which kind of set they meet.
struct SetCatalog {
    private var sets: [Name: NamedSet] = [:]
    /// The concatenated interval sets, asked about for every lookup lowered or raised: a
    /// membership test costs less than copying a definition out of `sets`.
    private var concatenatedIntervals: Set<Name> = []

    init(_ sets: [NamedSet] = []) {
        for set in sets { add(set) }
    }

    mutating func add(_ set: NamedSet) {
        sets[set.name] = set.withoutElements
        if set.isConcatenatedInterval { concatenatedIntervals.insert(set.name) } else { concatenatedIntervals.remove(set.name) }
    }

    /// Adds (or replaces with) every definition of `other`.
    mutating func add(contentsOf other: SetCatalog) {
        for set in other.sets.values { add(set) }
    }

    subscript(_ name: Name) -> NamedSet? { sets[name] }

    var names: Set<Name> { Set(sets.keys) }

    /// Whether lookups into `name` convert host-order key fields to network order first.
    func isConcatenatedInterval(_ name: Name) -> Bool { concatenatedIntervals.contains(name) }
}

extension NamedSet {
    /// An interval set with a concatenated key: the kernel's pipapo backend. Its elements carry
    /// an inclusive end key, and nft turns host-order key fields to network order before a lookup.
    var isConcatenatedInterval: Bool { flags.contains(.interval) && key.count > 1 }
}

extension Statement {
    /// The set or map the statement looks up or updates.
    var setName: Name? {
        switch self {
        case .lookup(_, let set), .notInSet(_, let set): set
        case .vmap(_, let map), .dnatMap(_, let map), .update(let map, _, _, _): map
        default: nil
        }
    }
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
        let addressSlots = Register.slots(family.ipFamily.addressLength)
        switch selector {
        case .saddr, .daddr:
            let length = family.ipFamily.addressLength
            return (.payload(base: K.networkHeader, offset: addressOffset(selector, family)!, length: UInt32(length), dreg: dreg), addressSlots)
        case .l4proto:
            return (.meta(key: K.metaL4proto, dreg: dreg), 1)
        case .thDport, .dport:
            // `tcp dport` loads what `th dport` loads; its `meta l4proto` dependency is a statement of its own.
            return (.payload(base: K.transportHeader, offset: 2, length: 2, dreg: dreg), 1)
        case .ctOriginalDaddr:
            return (.ct(key: family == .ip ? K.ctDstIP : K.ctDstIP6, dreg: dreg, direction: K.ctDirOriginal), addressSlots)
        case .ctOriginalProtoDst:
            return (.ct(key: K.ctProtoDst, dreg: dreg, direction: K.ctDirOriginal), 1)
        }
    }

    /// Loads a concatenation into consecutive slots from `start` (NFT_REG_1 for a lookup key), as
    /// nft does; returns the expressions and the slot after the last field. For a concatenated
    /// interval set nft converts the host-order `meta l4proto` byte to network order first
    /// (`byteorder reg 9 = hton(reg 9, 2, 1)`: 1 byte in 2-byte units, so no bytes move).
    static func concatenation(_ selectors: [Selector], family: Family, start: Int = 0,
                              hostToNetwork: Bool = false) throws(LoweringError) -> (expressions: [Expression], end: Int) {
        guard !selectors.isEmpty else { throw LoweringError(message: "a lookup needs at least one selector") }
        var slot = start
        var out: [Expression] = []
        for selector in selectors {
            let (expression, used) = load(selector, family: family, slot: slot)
            out.append(expression)
            if hostToNetwork && selector == .l4proto {
                let register = Register.number(slot: slot)
                out.append(.byteorder(sreg: register, dreg: register, op: K.byteorderHton, length: 1, size: 2))
            }
            slot += used
        }
        guard slot <= Register.slotCount else {
            throw LoweringError(message: "a concatenation of \(selectors.count) fields does not fit the 64-byte register file")
        }
        return (out, slot)
    }

    static func hostU32(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }

    /// A lookup of `selectors` in `set`: the key from NFT_REG_1, then the lookup.
    private static func lookup(_ selectors: [Selector], in set: Name, dreg: UInt32?, flags: UInt32, family: Family,
                               sets: SetCatalog) throws(LoweringError) -> [Expression] {
        let key = try concatenation(selectors, family: family, hostToNetwork: sets.isConcatenatedInterval(set)).expressions
        return key + [.lookup(sreg: K.reg1, dreg: dreg, set: set.rawValue, flags: flags)]
    }

    static func statement(_ statement: Statement, family: Family, sets: SetCatalog) throws(LoweringError) -> [Expression] {
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
            let address = cidr.address.bytes  // built on each read
            let length = address.count
            let prefix = cidr.prefixLength
            if prefix == length * 8 {
                return [.payload(base: K.networkHeader, offset: offset, length: UInt32(length), dreg: reg1),
                        .cmp(sreg: reg1, op: op, data: address)]
            }
            if prefix > 0 && prefix % 8 == 0 {
                // nft trims a byte-aligned prefix to a shorter load.
                let bytes = prefix / 8
                return [.payload(base: K.networkHeader, offset: offset, length: UInt32(bytes), dreg: reg1),
                        .cmp(sreg: reg1, op: op, data: Array(address.prefix(bytes)))]
            }
            return [.payload(base: K.networkHeader, offset: offset, length: UInt32(length), dreg: reg1),
                    .bitwise(sreg: reg1, dreg: reg1, mask: cidr.maskBytes, xor: [UInt8](repeating: 0, count: length)),
                    .cmp(sreg: reg1, op: op, data: address)]
        case .l4proto(let proto):
            return [.meta(key: K.metaL4proto, dreg: reg1), .cmp(sreg: reg1, op: K.cmpEq, data: [proto.number])]
        case .ctStateNew:
            return [.ct(key: K.ctState, dreg: reg1, direction: nil),
                    .bitwise(sreg: reg1, dreg: reg1, mask: hostU32(K.ctStateNewBit), xor: hostU32(0)),
                    .cmp(sreg: reg1, op: K.cmpNeq, data: hostU32(0))]
        case .ctStatusDNAT:
            return [.ct(key: K.ctStatus, dreg: reg1, direction: nil),
                    .bitwise(sreg: reg1, dreg: reg1, mask: hostU32(K.ctStatusDstNAT), xor: hostU32(0)),
                    .cmp(sreg: reg1, op: K.cmpNeq, data: hostU32(0))]
        case .fibLocal(let address):
            return [.fib(flags: address == .saddr ? K.fibSaddr : K.fibDaddr, result: K.fibAddrtype, dreg: reg1),
                    .cmp(sreg: reg1, op: K.cmpEq, data: hostU32(K.rtnLocal))]
        case .lookup(let selectors, let set):
            return try lookup(selectors, in: set, dreg: nil, flags: 0, family: family, sets: sets)
        case .notInSet(let selectors, let set):
            return try lookup(selectors, in: set, dreg: nil, flags: K.lookupInvert, family: family, sets: sets)
        case .vmap(let selectors, let map):
            return try lookup(selectors, in: map, dreg: K.regVerdict, flags: 0, family: family, sets: sets)
        case .dnatMap(let selectors, let map):
            // nft gives the address the map returns into NFT_REG_1 and reads the port from the
            // slot after the address (`nat dnat ip addr_min reg 1 proto_min reg 9`); no flags.
            let address = DataType.address(family)
            if let known = sets[map], known.data != [address, .inetService] {
                throw LoweringError(message: "dnat to … map @\(map) needs a map to \(address.rawValue) . inet_service")
            }
            let addressSlots = Register.slots(address.length)
            return try lookup(selectors, in: map, dreg: reg1, flags: 0, family: family, sets: sets)
                + [.nat(type: K.natDNAT, family: UInt32(family.nfproto), addrMin: reg1, protoMin: Register.number(slot: addressSlots), flags: 0)]
        case .update(let map, let key, let timeout, let data):
            if let known = sets[map] {
                guard known.isDynamic, !known.isConcatenatedInterval else {
                    throw LoweringError(message: "update @\(map) needs a set with the dynamic flag and no interval flag")
                }
                guard known.data.isEmpty == data.isEmpty else {
                    throw LoweringError(message: "update @\(map) with\(data.isEmpty ? "out" : "") data, but the set is \(known.data.isEmpty ? "not " : "")a data map")
                }
            }
            let keyLoads = try concatenation(key, family: family)
            // nft 1.0.6 gives the key a whole 16-byte register even when it is shorter, so the data
            // starts at NFT_REG_2; a longer key crashes nft 1.0.6 (netlink_gen_expr assertion), and
            // later versions put the data right after it, as here.
            let dataSlot = max(4, keyLoads.end)
            var dataLoads: [Expression] = []
            var slot = dataSlot
            for operand in data {
                switch operand {
                case .field(let selector):
                    let (expression, used) = load(selector, family: family, slot: slot)
                    dataLoads.append(expression)
                    slot += used
                case .value(let value):
                    // nft writes a constant into its slot with an immediate, in network byte order.
                    switch value {
                    case .address(let ip) where ip.family == family.ipFamily: break
                    case .port: break
                    default: throw LoweringError(message: "update @\(map): \(value) is not an address of the \(family.rawValue) family or a port")
                    }
                    let bytes = ElementKey.bytes(value).low
                    dataLoads.append(.immediateData(dreg: Register.number(slot: slot), data: bytes))
                    slot += Register.slots(bytes.count)
                }
            }
            guard slot <= Register.slotCount else {
                throw LoweringError(message: "update @\(map): key and data do not fit the 64-byte register file")
            }
            return keyLoads.expressions + dataLoads
                + [.dynset(op: K.dynsetUpdate, sregKey: reg1, sregData: data.isEmpty ? nil : Register.number(slot: dataSlot),
                           set: map.rawValue, timeout: UInt64(timeout))]
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

    static func rule(_ rule: Rule, family: Family, sets: SetCatalog) throws(LoweringError) -> [Expression] {
        try checkProtocolContext(rule.statements)
        var out: [Expression] = []
        out.reserveCapacity(3 * rule.statements.count)  // most statements lower to 2 or 3 expressions
        for statement in rule.statements { out += try self.statement(statement, family: family, sets: sets) }
        return out
    }

    /// `tcp dport` and `ct original proto-dst` need a `meta l4proto` match earlier in the rule
    /// (nft would add one, or refuse). And since `th dport` loads the same bytes, nft lists a
    /// `th dport` after `meta l4proto tcp` as `tcp dport`, and so does the read-back; writing it
    /// would make a rule that does not read back as itself.
    static func checkProtocolContext(_ statements: [Statement]) throws(LoweringError) {
        var proto: L4Protocol?
        for statement in statements {
            if case .l4proto(let matched) = statement {
                proto = matched
                continue
            }
            for selector in selectors(of: statement) {
                switch selector {
                case .dport(let wanted) where wanted != proto:
                    throw LoweringError(message: "\(wanted) dport needs `meta l4proto \(wanted)` earlier in the rule")
                case .ctOriginalProtoDst where proto == nil:
                    throw LoweringError(message: "ct original proto-dst needs a `meta l4proto` match earlier in the rule")
                case .thDport where proto != nil:
                    throw LoweringError(message: "after `meta l4proto \(proto!)`, write `\(proto!) dport` (nft lists `th dport` there as such)")
                default:
                    break
                }
            }
        }
    }

    static func selectors(of statement: Statement) -> [Selector] {
        switch statement {
        case .lookup(let selectors, _), .notInSet(let selectors, _), .vmap(let selectors, _), .dnatMap(let selectors, _): selectors
        case .update(_, let key, _, let data): key + data.compactMap(\.selector)
        default: []
        }
    }
}
