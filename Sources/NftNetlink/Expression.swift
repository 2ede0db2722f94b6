import NftIR
import ServiceModel

/// One nf_tables expression, with exactly the attributes nft 1.0.6 sends and the kernel dumps
/// back (after the normalisation in `DumpDecoder.expression` and `normalized`), so a lowered rule
/// and a dumped one compare with `==`. Constants are held inline (`RegisterValue`): reading a
/// ruleset back makes millions of these, and none allocates.
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
    case cmp(sreg: UInt32, op: UInt32, data: RegisterValue)
    /// `bitwise reg DREG = (reg SREG & MASK) ^ XOR`; the length is the mask's.
    case bitwise(sreg: UInt32, dreg: UInt32, mask: RegisterValue, xor: RegisterValue)
    /// `byteorder reg DREG = OP(reg SREG, SIZE, LENGTH)`
    case byteorder(sreg: UInt32, dreg: UInt32, op: UInt32, length: UInt32, size: UInt32)
    /// `lookup reg SREG set NAME [dreg DREG] [FLAGS]`; dreg 0 (NFT_REG_VERDICT) makes it a vmap.
    case lookup(sreg: UInt32, dreg: UInt32?, set: String, flags: UInt32)
    /// `dynset OP reg_key SREG_KEY set NAME [sreg_data SREG_DATA] [timeout MS]`; timeout 0 = none.
    case dynset(op: UInt32, sregKey: UInt32, sregData: UInt32?, set: String, timeout: UInt64)
    /// `numgen reg DREG = TYPE mod MODULUS offset OFFSET`
    case numgen(dreg: UInt32, modulus: UInt32, type: UInt32, offset: UInt32)
    /// `immediate reg DREG DATA`
    case immediateData(dreg: UInt32, data: RegisterValue)
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
        func hex(_ bytes: RegisterValue) -> String { "0x" + bytes.map { byte in String(byte, radix: 16).leftPadded(2) }.joined() }
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

/// A constant a rule puts in a register (cmp data, a bitwise mask or xor, an immediate): at
/// most 16 bytes, held inline so that lowering a rule, or reading one back, allocates nothing
/// for it. The bytes past `count` are zero, so two values are equal when their fields are.
struct RegisterValue: Hashable, RandomAccessCollection, ExpressibleByArrayLiteral {
    private var storage: (UInt64, UInt64) = (0, 0)
    /// 1 to 16.
    let count: Int

    private init(count: Int, _ fill: (UnsafeMutableRawBufferPointer) -> Void) {
        precondition((1...16).contains(count), "a register value has 1 to 16 bytes")
        self.count = count
        withUnsafeMutableBytes(of: &storage) { fill(UnsafeMutableRawBufferPointer(rebasing: $0[0..<count])) }
    }

    /// Bytes read from the kernel (an NFTA_DATA_VALUE); nil unless there are 1 to 16.
    init?(_ bytes: UnsafeRawBufferPointer) {
        guard (1...16).contains(bytes.count) else { return nil }
        self.init(count: bytes.count) { $0.copyMemory(from: bytes) }
    }

    init(arrayLiteral bytes: UInt8...) {
        self.init(count: bytes.count) { $0.copyBytes(from: bytes) }
    }

    /// The first `count` bytes of the address, in network order (all of them by default).
    init(_ ip: IPAddress, count: Int? = nil) {
        let length = ip.family == .ipv4 ? 4 : 16
        self.init(count: count ?? length) { bytes in
            switch ip.family {
            case .ipv4: Swift.withUnsafeBytes(of: UInt32(truncatingIfNeeded: ip.low).bigEndian) { bytes.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[0..<bytes.count])) }
            case .ipv6: Swift.withUnsafeBytes(of: (ip.high.bigEndian, ip.low.bigEndian)) { bytes.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[0..<bytes.count])) }
            }
        }
    }

    /// The netmask of a `prefixLength`-bit prefix, `count` bytes long.
    init(maskOf prefixLength: Int, count: Int) {
        self.init(count: count) { bytes in
            for index in 0..<count {
                let bits = Swift.min(Swift.max(prefixLength - 8 * index, 0), 8)
                bytes[index] = UInt8(truncatingIfNeeded: 0xff00 >> bits)
            }
        }
    }

    /// `count` zero bytes.
    init(zeros count: Int) { self.init(count: count) { _ in } }

    /// A u32 in host byte order, as nft writes mark bits, ct state bits and fib results.
    init(hostU32 value: UInt32) {
        self.init(count: 4) { bytes in bytes.storeBytes(of: value, as: UInt32.self) }
    }

    /// A port in network byte order.
    init(port: UInt16) {
        self.init(count: 2) { bytes in bytes.storeBytes(of: port.bigEndian, as: UInt16.self) }
    }

    init(byte: UInt8) { self.init(count: 1) { bytes in bytes[0] = byte } }

    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try Swift.withUnsafeBytes(of: storage) { try body(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
    }

    var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    var startIndex: Int { 0 }
    var endIndex: Int { count }

    subscript(position: Int) -> UInt8 {
        precondition(position >= 0 && position < count, "register value index out of range")
        return Swift.withUnsafeBytes(of: storage) { $0[position] }
    }

    static func == (lhs: RegisterValue, rhs: RegisterValue) -> Bool {
        lhs.count == rhs.count && lhs.storage.0 == rhs.storage.0 && lhs.storage.1 == rhs.storage.1
    }

    func hash(into hasher: inout Hasher) {
        hasher.combine(count)
        hasher.combine(storage.0)
        hasher.combine(storage.1)
    }
}

extension IPAddress {
    /// An address from a register constant of 4 or 16 bytes.
    init?(bytes value: RegisterValue) {
        switch value.count {
        case 4: self.init(ipv4: value.withUnsafeBytes { UInt32(bigEndian: $0.loadUnaligned(as: UInt32.self)) })
        case 16:
            let (high, low) = value.withUnsafeBytes { ($0.loadUnaligned(as: UInt64.self), $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) }
            self.init(ipv6High: UInt64(bigEndian: high), low: UInt64(bigEndian: low))
        default: return nil
        }
    }
}

/// Where `Lowering` puts the expressions it makes: straight into a rule's netlink message
/// (`MessageWriter`, for a batch), into `Expression` values (`ExpressionList`), or against the
/// expressions of a dumped rule (`ExpressionMatcher`, reading rules back). One lowering feeds
/// all, so they cannot drift apart.
protocol ExpressionSink {
    mutating func payload(base: UInt32, offset: UInt32, length: UInt32, dreg: UInt32)
    mutating func meta(key: UInt32, dreg: UInt32)
    mutating func metaSet(key: UInt32, sreg: UInt32)
    mutating func ct(key: UInt32, dreg: UInt32, direction: UInt8?)
    mutating func fib(flags: UInt32, result: UInt32, dreg: UInt32)
    mutating func cmp(sreg: UInt32, op: UInt32, data: RegisterValue)
    /// `op`: NFTA_BITWISE_OP where nft sends it (for `&`, `|` and `^` it wrote; a prefix or a flag
    /// test leaves it out). The kernel reads a missing op as NFT_BITWISE_MASK_XOR, and dumps it either way.
    mutating func bitwise(sreg: UInt32, dreg: UInt32, mask: RegisterValue, xor: RegisterValue, op: UInt32?)
    mutating func byteorder(sreg: UInt32, dreg: UInt32, op: UInt32, length: UInt32, size: UInt32)
    mutating func lookup(sreg: UInt32, dreg: UInt32?, set: Name, flags: UInt32)
    mutating func dynset(op: UInt32, sregKey: UInt32, sregData: UInt32?, set: Name, timeout: UInt64)
    mutating func numgen(dreg: UInt32, modulus: UInt32, type: UInt32, offset: UInt32)
    mutating func immediateData(dreg: UInt32, data: RegisterValue)
    mutating func immediateVerdict(code: Int32, chain: Name?)
    mutating func nat(type: UInt32, family: UInt32, addrMin: UInt32, protoMin: UInt32, flags: UInt32)
    mutating func masq(flags: UInt32)
    mutating func reject(type: UInt32, code: UInt8)
}

extension ExpressionSink {
    /// A bitwise without NFTA_BITWISE_OP.
    mutating func bitwise(sreg: UInt32, dreg: UInt32, mask: RegisterValue, xor: RegisterValue) {
        bitwise(sreg: sreg, dreg: dreg, mask: mask, xor: xor, op: nil)
    }
}

/// A sink that takes each expression as a value.
protocol ExpressionValueSink: ExpressionSink {
    mutating func add(_ expression: Expression)
}

extension ExpressionValueSink {
    mutating func payload(base: UInt32, offset: UInt32, length: UInt32, dreg: UInt32) {
        add(.payload(base: base, offset: offset, length: length, dreg: dreg))
    }
    mutating func meta(key: UInt32, dreg: UInt32) { add(.meta(key: key, dreg: dreg)) }
    mutating func metaSet(key: UInt32, sreg: UInt32) { add(.metaSet(key: key, sreg: sreg)) }
    mutating func ct(key: UInt32, dreg: UInt32, direction: UInt8?) { add(.ct(key: key, dreg: dreg, direction: direction)) }
    mutating func fib(flags: UInt32, result: UInt32, dreg: UInt32) { add(.fib(flags: flags, result: result, dreg: dreg)) }
    mutating func cmp(sreg: UInt32, op: UInt32, data: RegisterValue) { add(.cmp(sreg: sreg, op: op, data: data)) }
    /// The op is not kept: a dump has it whether it was sent or not (`DumpDecoder.expression`).
    mutating func bitwise(sreg: UInt32, dreg: UInt32, mask: RegisterValue, xor: RegisterValue, op: UInt32?) {
        add(.bitwise(sreg: sreg, dreg: dreg, mask: mask, xor: xor))
    }
    mutating func byteorder(sreg: UInt32, dreg: UInt32, op: UInt32, length: UInt32, size: UInt32) {
        add(.byteorder(sreg: sreg, dreg: dreg, op: op, length: length, size: size))
    }
    mutating func lookup(sreg: UInt32, dreg: UInt32?, set: Name, flags: UInt32) {
        add(.lookup(sreg: sreg, dreg: dreg, set: set.rawValue, flags: flags))
    }
    mutating func dynset(op: UInt32, sregKey: UInt32, sregData: UInt32?, set: Name, timeout: UInt64) {
        add(.dynset(op: op, sregKey: sregKey, sregData: sregData, set: set.rawValue, timeout: timeout))
    }
    mutating func numgen(dreg: UInt32, modulus: UInt32, type: UInt32, offset: UInt32) {
        add(.numgen(dreg: dreg, modulus: modulus, type: type, offset: offset))
    }
    mutating func immediateData(dreg: UInt32, data: RegisterValue) { add(.immediateData(dreg: dreg, data: data)) }
    mutating func immediateVerdict(code: Int32, chain: Name?) { add(.immediateVerdict(code: code, chain: chain?.rawValue)) }
    mutating func nat(type: UInt32, family: UInt32, addrMin: UInt32, protoMin: UInt32, flags: UInt32) {
        add(.nat(type: type, family: family, addrMin: addrMin, protoMin: protoMin, flags: flags))
    }
    mutating func masq(flags: UInt32) { add(.masq(flags: flags)) }
    mutating func reject(type: UInt32, code: UInt8) { add(.reject(type: type, code: code)) }
}

/// The expressions of a statement or rule as values.
struct ExpressionList: ExpressionValueSink {
    var expressions: [Expression] = []

    mutating func add(_ expression: Expression) { expressions.append(expression) }
}

/// Checks a lowering, expression by expression as it is made, against dumped expressions from
/// `position` on, as the kernel dumps them back (`normalized`): how `Raising` confirms a
/// statement read off a dump without building the statement's expressions.
struct ExpressionMatcher: ExpressionValueSink {
    let dumped: [Expression]
    /// The next dumped expression to compare; after a match, the one after the statement.
    private(set) var position: Int
    private(set) var matches = true

    init(_ dumped: [Expression], at position: Int) {
        self.dumped = dumped
        self.position = position
    }

    mutating func add(_ expected: Expression) {
        guard matches, position < dumped.count else {
            matches = false
            return
        }
        let found = dumped[position]
        guard found == expected || found.normalized == expected.normalized else {
            matches = false
            return
        }
        position += 1
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

    /// Loads `selector` into slot `slot`; returns the slots it occupies.
    static func load(_ selector: Selector, family: Family, slot: Int, into sink: inout some ExpressionSink) -> Int {
        let dreg = Register.number(slot: slot)
        let addressSlots = Register.slots(family.ipFamily.addressLength)
        switch selector {
        case .saddr, .daddr:
            let length = family.ipFamily.addressLength
            sink.payload(base: K.networkHeader, offset: addressOffset(selector, family)!, length: UInt32(length), dreg: dreg)
            return addressSlots
        case .l4proto:
            sink.meta(key: K.metaL4proto, dreg: dreg)
            return 1
        case .thDport, .dport:
            // `tcp dport` loads what `th dport` loads; its `meta l4proto` dependency is a statement of its own.
            sink.payload(base: K.transportHeader, offset: 2, length: 2, dreg: dreg)
            return 1
        case .ctOriginalDaddr:
            sink.ct(key: family == .ip ? K.ctDstIP : K.ctDstIP6, dreg: dreg, direction: K.ctDirOriginal)
            return addressSlots
        case .ctOriginalProtoDst:
            sink.ct(key: K.ctProtoDst, dreg: dreg, direction: K.ctDirOriginal)
            return 1
        case .maskedDaddr(let bits):
            // nft loads the whole address and masks it in place (never a shorter load), with an explicit op.
            let length = family.ipFamily.addressLength
            sink.payload(base: K.networkHeader, offset: addressOffset(.daddr, family)!, length: UInt32(length), dreg: dreg)
            sink.bitwise(sreg: dreg, dreg: dreg, mask: RegisterValue(Selector.lowBitsMask(bits, family)), xor: RegisterValue(zeros: length), op: K.bitwiseMaskXor)
            return addressSlots
        }
    }

    /// A mask keeps at least one bit, and at most the family's address has.
    static func check(_ selector: Selector, family: Family) throws(LoweringError) {
        if case .maskedDaddr(let bits) = selector, bits == 0 || Int(bits) > family.ipFamily.maxPrefixLength {
            throw LoweringError(message: "\(family.rawValue) daddr masked to its low \(bits) bits")
        }
    }

    /// Loads a concatenation into consecutive slots from `start` (NFT_REG_1 for a lookup key), as
    /// nft does; returns the slot after the last field. For a concatenated interval set nft
    /// converts the host-order `meta l4proto` byte to network order first (`byteorder reg 9 =
    /// hton(reg 9, 2, 1)`: 1 byte in 2-byte units, so no bytes move).
    static func concatenation(_ selectors: [Selector], family: Family, start: Int = 0, hostToNetwork: Bool = false,
                              into sink: inout some ExpressionSink) throws(LoweringError) -> Int {
        guard !selectors.isEmpty else { throw LoweringError(message: "a lookup needs at least one selector") }
        var slot = start
        for selector in selectors {
            try check(selector, family: family)
            let used = load(selector, family: family, slot: slot, into: &sink)
            if hostToNetwork && selector == .l4proto {
                let register = Register.number(slot: slot)
                sink.byteorder(sreg: register, dreg: register, op: K.byteorderHton, length: 1, size: 2)
            }
            slot += used
        }
        guard slot <= Register.slotCount else {
            throw LoweringError(message: "a concatenation of \(selectors.count) fields does not fit the 64-byte register file")
        }
        return slot
    }

    /// A lookup of `selectors` in `set`: the key from NFT_REG_1, then the lookup.
    private static func lookup(_ selectors: [Selector], in set: Name, dreg: UInt32?, flags: UInt32, family: Family,
                               sets: SetCatalog, into sink: inout some ExpressionSink) throws(LoweringError) {
        _ = try concatenation(selectors, family: family, hostToNetwork: sets.isConcatenatedInterval(set), into: &sink)
        sink.lookup(sreg: K.reg1, dreg: dreg, set: set, flags: flags)
    }

    /// The statement's expressions, as values.
    static func statement(_ statement: Statement, family: Family, sets: SetCatalog) throws(LoweringError) -> [Expression] {
        var list = ExpressionList()
        try self.statement(statement, family: family, sets: sets, into: &list)
        return list.expressions
    }

    static func statement(_ statement: Statement, family: Family, sets: SetCatalog, into sink: inout some ExpressionSink) throws(LoweringError) {
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
            let length = family.ipFamily.addressLength
            let prefix = cidr.prefixLength
            if prefix == length * 8 {
                sink.payload(base: K.networkHeader, offset: offset, length: UInt32(length), dreg: reg1)
                sink.cmp(sreg: reg1, op: op, data: RegisterValue(cidr.address))
            } else if prefix > 0 && prefix % 8 == 0 {
                // nft trims a byte-aligned prefix to a shorter load.
                let bytes = prefix / 8
                sink.payload(base: K.networkHeader, offset: offset, length: UInt32(bytes), dreg: reg1)
                sink.cmp(sreg: reg1, op: op, data: RegisterValue(cidr.address, count: bytes))
            } else {
                sink.payload(base: K.networkHeader, offset: offset, length: UInt32(length), dreg: reg1)
                sink.bitwise(sreg: reg1, dreg: reg1, mask: RegisterValue(maskOf: prefix, count: length), xor: RegisterValue(zeros: length))
                sink.cmp(sreg: reg1, op: op, data: RegisterValue(cidr.address))
            }
        case .l4proto(let proto):
            sink.meta(key: K.metaL4proto, dreg: reg1)
            sink.cmp(sreg: reg1, op: K.cmpEq, data: RegisterValue(byte: proto.number))
        case .ctStateNew:
            sink.ct(key: K.ctState, dreg: reg1, direction: nil)
            sink.bitwise(sreg: reg1, dreg: reg1, mask: RegisterValue(hostU32: K.ctStateNewBit), xor: RegisterValue(hostU32: 0))
            sink.cmp(sreg: reg1, op: K.cmpNeq, data: RegisterValue(hostU32: 0))
        case .ctStatusDNAT:
            sink.ct(key: K.ctStatus, dreg: reg1, direction: nil)
            sink.bitwise(sreg: reg1, dreg: reg1, mask: RegisterValue(hostU32: K.ctStatusDstNAT), xor: RegisterValue(hostU32: 0))
            sink.cmp(sreg: reg1, op: K.cmpNeq, data: RegisterValue(hostU32: 0))
        case .fibLocal(let address):
            sink.fib(flags: address == .saddr ? K.fibSaddr : K.fibDaddr, result: K.fibAddrtype, dreg: reg1)
            sink.cmp(sreg: reg1, op: K.cmpEq, data: RegisterValue(hostU32: K.rtnLocal))
        case .lookup(let selectors, let set):
            try lookup(selectors, in: set, dreg: nil, flags: 0, family: family, sets: sets, into: &sink)
        case .notInSet(let selectors, let set):
            try lookup(selectors, in: set, dreg: nil, flags: K.lookupInvert, family: family, sets: sets, into: &sink)
        case .vmap(let selectors, let map):
            try lookup(selectors, in: map, dreg: K.regVerdict, flags: 0, family: family, sets: sets, into: &sink)
        case .dnatMap(let selectors, let map):
            // nft gives the address the map returns into NFT_REG_1 and reads the port from the
            // slot after the address (`nat dnat ip addr_min reg 1 proto_min reg 9`); no flags.
            let address = DataType.address(family)
            if let known = sets[map], known.data != [address, .inetService] {
                throw LoweringError(message: "dnat to … map @\(map) needs a map to \(address.rawValue) . inet_service")
            }
            let addressSlots = Register.slots(address.length)
            try lookup(selectors, in: map, dreg: reg1, flags: 0, family: family, sets: sets, into: &sink)
            sink.nat(type: K.natDNAT, family: UInt32(family.nfproto), addrMin: reg1, protoMin: Register.number(slot: addressSlots), flags: 0)
        case .update(let map, let key, let timeout, let data):
            if let known = sets[map] {
                guard known.isDynamic, !known.isConcatenatedInterval else {
                    throw LoweringError(message: "update @\(map) needs a set with the dynamic flag and no interval flag")
                }
                guard known.data.isEmpty == data.isEmpty else {
                    throw LoweringError(message: "update @\(map) with\(data.isEmpty ? "out" : "") data, but the set is \(known.data.isEmpty ? "not " : "")a data map")
                }
            }
            let keyEnd = try concatenation(key, family: family, into: &sink)
            // nft 1.0.6 gives the key a whole 16-byte register even when it is shorter, so the data
            // starts at NFT_REG_2; a longer key crashes nft 1.0.6 (netlink_gen_expr assertion), and
            // later versions put the data right after it, as here.
            let dataSlot = max(4, keyEnd)
            var slot = dataSlot
            for operand in data {
                switch operand {
                case .field(let selector):
                    try check(selector, family: family)
                    slot += load(selector, family: family, slot: slot, into: &sink)
                case .value(let value):
                    // nft writes a constant into its slot with an immediate, in network byte order.
                    let constant: RegisterValue
                    switch value {
                    case .address(let ip) where ip.family == family.ipFamily: constant = RegisterValue(ip)
                    case .port(let port): constant = RegisterValue(port: port)
                    default: throw LoweringError(message: "update @\(map): \(value) is not an address of the \(family.rawValue) family or a port")
                    }
                    sink.immediateData(dreg: Register.number(slot: slot), data: constant)
                    slot += Register.slots(constant.count)
                }
            }
            guard slot <= Register.slotCount else {
                throw LoweringError(message: "update @\(map): key and data do not fit the 64-byte register file")
            }
            sink.dynset(op: K.dynsetUpdate, sregKey: reg1, sregData: data.isEmpty ? nil : Register.number(slot: dataSlot),
                        set: map, timeout: UInt64(timeout))
        case .numgenIncZero(let modulus):
            guard modulus > 0 else { throw LoweringError(message: "numgen modulus must be at least 1") }
            sink.numgen(dreg: reg1, modulus: modulus, type: K.numgenIncremental, offset: 0)
            sink.cmp(sreg: reg1, op: K.cmpEq, data: RegisterValue(hostU32: 0))
        case .markBitClear(let bit):
            sink.meta(key: K.metaMark, dreg: reg1)
            sink.bitwise(sreg: reg1, dreg: reg1, mask: RegisterValue(hostU32: bit), xor: RegisterValue(hostU32: 0))
            sink.cmp(sreg: reg1, op: K.cmpEq, data: RegisterValue(hostU32: 0))
        case .setMarkBit(let bit):
            sink.meta(key: K.metaMark, dreg: reg1)
            sink.bitwise(sreg: reg1, dreg: reg1, mask: RegisterValue(hostU32: ~bit), xor: RegisterValue(hostU32: bit))
            sink.metaSet(key: K.metaMark, sreg: reg1)
        case .toggleMarkBit(let bit):
            sink.meta(key: K.metaMark, dreg: reg1)
            sink.bitwise(sreg: reg1, dreg: reg1, mask: RegisterValue(hostU32: 0xffff_ffff), xor: RegisterValue(hostU32: bit))
            sink.metaSet(key: K.metaMark, sreg: reg1)
        case .dnat(let ip, let port):
            guard ip.family == family.ipFamily else {
                throw LoweringError(message: "dnat to \(ip) in a \(family.rawValue) table")
            }
            // nft gives the address a whole 16-byte register, so the port lands in NFT_REG_2.
            sink.immediateData(dreg: reg1, data: RegisterValue(ip))
            sink.immediateData(dreg: K.reg2, data: RegisterValue(port: port))
            sink.nat(type: K.natDNAT, family: UInt32(family.nfproto), addrMin: reg1, protoMin: K.reg2, flags: K.natProtoSpecified)
        case .masquerade(let fullyRandom):
            sink.masq(flags: fullyRandom ? K.natRandomFully : 0)
        case .reject:
            sink.reject(type: K.rejectICMPUnreach, code: family == .ip ? K.icmpPortUnreach : K.icmpv6PortUnreach)
        case .verdict(let verdict):
            let (code, chain) = verdictCode(verdict)
            sink.immediateVerdict(code: code, chain: chain)
        }
    }

    /// NF_ACCEPT, NF_DROP, NFT_RETURN, NFT_JUMP or NFT_GOTO, and the chain of a jump or goto.
    static func verdictCode(_ verdict: Verdict) -> (code: Int32, chain: Name?) {
        switch verdict {
        case .accept: (K.verdictAccept, nil)
        case .drop: (K.verdictDrop, nil)
        case .return: (K.verdictReturn, nil)
        case .jump(let chain): (K.verdictJump, chain)
        case .goto(let chain): (K.verdictGoto, chain)
        }
    }

    /// The rule's expressions, as values.
    static func rule(_ rule: Rule, family: Family, sets: SetCatalog) throws(LoweringError) -> [Expression] {
        var list = ExpressionList()
        list.expressions.reserveCapacity(3 * rule.statements.count)  // most statements lower to 2 or 3 expressions
        try self.rule(rule, family: family, sets: sets, into: &list)
        return list.expressions
    }

    static func rule(_ rule: Rule, family: Family, sets: SetCatalog, into sink: inout some ExpressionSink) throws(LoweringError) {
        try checkProtocolContext(rule.statements)
        for statement in rule.statements { try self.statement(statement, family: family, sets: sets, into: &sink) }
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
