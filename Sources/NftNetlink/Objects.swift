internal import CNftables
import NftIR
import ServiceModel

/// Owners of libnftnl objects: each frees its object on deinit, and children added to a parent
/// (expressions to a rule, elements to a set) pass to the parent's owner.
final class NftnlRule {
    let pointer: OpaquePointer
    init() throws(LoweringError) {
        guard let pointer = nftnl_rule_alloc() else { throw LoweringError(message: "out of memory (nftnl_rule_alloc)") }
        self.pointer = pointer
    }
    deinit { nftnl_rule_free(pointer) }
}

final class NftnlChain {
    let pointer: OpaquePointer
    init() throws(LoweringError) {
        guard let pointer = nftnl_chain_alloc() else { throw LoweringError(message: "out of memory (nftnl_chain_alloc)") }
        self.pointer = pointer
    }
    deinit { nftnl_chain_free(pointer) }
}

final class NftnlTable {
    let pointer: OpaquePointer
    init() throws(LoweringError) {
        guard let pointer = nftnl_table_alloc() else { throw LoweringError(message: "out of memory (nftnl_table_alloc)") }
        self.pointer = pointer
    }
    deinit { nftnl_table_free(pointer) }
}

final class NftnlSet {
    let pointer: OpaquePointer
    init() throws(LoweringError) {
        guard let pointer = nftnl_set_alloc() else { throw LoweringError(message: "out of memory (nftnl_set_alloc)") }
        self.pointer = pointer
    }
    deinit { nftnl_set_free(pointer) }
}

final class NftnlGen {
    let pointer: OpaquePointer
    init() throws(LoweringError) {
        guard let pointer = nftnl_gen_alloc() else { throw LoweringError(message: "out of memory (nftnl_gen_alloc)") }
        self.pointer = pointer
    }
    deinit { nftnl_gen_free(pointer) }
}

/// Typed, width-checked access to libnftnl attributes (libnftnl exits the process on a wrong
/// width for tables, chains, rules and sets, so every getter here names its width).
enum Attr {
    static func id<T: RawRepresentable>(_ attribute: T) -> UInt16 where T.RawValue: BinaryInteger { UInt16(attribute.rawValue) }
    static func id(_ attribute: Int) -> UInt16 { UInt16(attribute) }

    static func bytes(_ pointer: UnsafeRawPointer?, _ length: UInt32) -> [UInt8] {
        guard let pointer else { return [] }
        return Array(UnsafeRawBufferPointer(start: pointer, count: Int(length)))
    }

    static func string(_ pointer: UnsafePointer<CChar>?) -> String? {
        pointer.map { String(cString: $0) }
    }
}

enum ExpressionCodec {
    /// Builds the libnftnl expression; the caller adds it to a rule, which then owns it.
    static func make(_ expression: Expression) throws(LoweringError) -> OpaquePointer {
        func alloc(_ name: String) throws(LoweringError) -> OpaquePointer {
            guard let e = nftnl_expr_alloc(name) else { throw LoweringError(message: "libnftnl does not know the \(name) expression") }
            return e
        }
        func u32(_ e: OpaquePointer, _ attribute: Int, _ value: UInt32) { nftnl_expr_set_u32(e, Attr.id(attribute), value) }
        func blob(_ e: OpaquePointer, _ attribute: Int, _ value: [UInt8]) throws(LoweringError) {
            guard !value.isEmpty, value.count <= 64 else { throw LoweringError(message: "expression data of \(value.count) bytes (1…64 allowed)") }
            let status = value.withUnsafeBytes { nftnl_expr_set(e, Attr.id(attribute), $0.baseAddress, UInt32($0.count)) }
            guard status >= 0 else { throw LoweringError(message: "libnftnl refused expression data") }
        }
        func string(_ e: OpaquePointer, _ attribute: Int, _ value: String) throws(LoweringError) {
            guard nftnl_expr_set_str(e, Attr.id(attribute), value) >= 0 else { throw LoweringError(message: "libnftnl refused \(value)") }
        }

        let e: OpaquePointer
        switch expression {
        case .payload(let base, let offset, let length, let dreg):
            e = try alloc("payload")
            u32(e, NFTNL_EXPR_PAYLOAD_DREG, dreg)
            u32(e, NFTNL_EXPR_PAYLOAD_BASE, base)
            u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset)
            u32(e, NFTNL_EXPR_PAYLOAD_LEN, length)
        case .meta(let key, let dreg):
            e = try alloc("meta")
            u32(e, NFTNL_EXPR_META_KEY, key)
            u32(e, NFTNL_EXPR_META_DREG, dreg)
        case .metaSet(let key, let sreg):
            e = try alloc("meta")
            u32(e, NFTNL_EXPR_META_KEY, key)
            u32(e, NFTNL_EXPR_META_SREG, sreg)
        case .ct(let key, let dreg, let direction):
            e = try alloc("ct")
            u32(e, NFTNL_EXPR_CT_DREG, dreg)
            u32(e, NFTNL_EXPR_CT_KEY, key)
            if let direction { nftnl_expr_set_u8(e, Attr.id(NFTNL_EXPR_CT_DIR), direction) }
        case .fib(let flags, let result, let dreg):
            e = try alloc("fib")
            u32(e, NFTNL_EXPR_FIB_DREG, dreg)
            u32(e, NFTNL_EXPR_FIB_RESULT, result)
            u32(e, NFTNL_EXPR_FIB_FLAGS, flags)
        case .cmp(let sreg, let op, let data):
            e = try alloc("cmp")
            u32(e, NFTNL_EXPR_CMP_SREG, sreg)
            u32(e, NFTNL_EXPR_CMP_OP, op)
            try blob(e, NFTNL_EXPR_CMP_DATA, data)
        case .bitwise(let sreg, let dreg, let mask, let xor):
            e = try alloc("bitwise")
            guard mask.count == xor.count else { throw LoweringError(message: "bitwise mask and xor differ in length") }
            u32(e, NFTNL_EXPR_BITWISE_SREG, sreg)
            u32(e, NFTNL_EXPR_BITWISE_DREG, dreg)
            u32(e, NFTNL_EXPR_BITWISE_LEN, UInt32(mask.count))
            try blob(e, NFTNL_EXPR_BITWISE_MASK, mask)
            try blob(e, NFTNL_EXPR_BITWISE_XOR, xor)
        case .byteorder(let sreg, let dreg, let op, let length, let size):
            e = try alloc("byteorder")
            u32(e, NFTNL_EXPR_BYTEORDER_SREG, sreg)
            u32(e, NFTNL_EXPR_BYTEORDER_DREG, dreg)
            u32(e, NFTNL_EXPR_BYTEORDER_LEN, length)
            u32(e, NFTNL_EXPR_BYTEORDER_SIZE, size)
            u32(e, NFTNL_EXPR_BYTEORDER_OP, op)
        case .dynset(let op, let sregKey, let sregData, let set, let timeout):
            e = try alloc("dynset")
            u32(e, NFTNL_EXPR_DYNSET_SREG_KEY, sregKey)
            if let sregData { u32(e, NFTNL_EXPR_DYNSET_SREG_DATA, sregData) }
            u32(e, NFTNL_EXPR_DYNSET_OP, op)
            try string(e, NFTNL_EXPR_DYNSET_SET_NAME, set)
            if timeout != 0 { nftnl_expr_set_u64(e, Attr.id(NFTNL_EXPR_DYNSET_TIMEOUT), timeout) }
        case .lookup(let sreg, let dreg, let set, let flags):
            e = try alloc("lookup")
            u32(e, NFTNL_EXPR_LOOKUP_SREG, sreg)
            if let dreg { u32(e, NFTNL_EXPR_LOOKUP_DREG, dreg) }
            try string(e, NFTNL_EXPR_LOOKUP_SET, set)
            if flags != 0 { u32(e, NFTNL_EXPR_LOOKUP_FLAGS, flags) }
        case .numgen(let dreg, let modulus, let type, let offset):
            e = try alloc("numgen")
            u32(e, NFTNL_EXPR_NG_DREG, dreg)
            u32(e, NFTNL_EXPR_NG_MODULUS, modulus)
            u32(e, NFTNL_EXPR_NG_TYPE, type)
            u32(e, NFTNL_EXPR_NG_OFFSET, offset)
        case .immediateData(let dreg, let data):
            e = try alloc("immediate")
            u32(e, NFTNL_EXPR_IMM_DREG, dreg)
            try blob(e, NFTNL_EXPR_IMM_DATA, data)
        case .immediateVerdict(let code, let chain):
            e = try alloc("immediate")
            u32(e, NFTNL_EXPR_IMM_DREG, K.regVerdict)
            u32(e, NFTNL_EXPR_IMM_VERDICT, UInt32(bitPattern: code))
            if let chain { try string(e, NFTNL_EXPR_IMM_CHAIN, chain) }
        case .nat(let type, let family, let addrMin, let protoMin, let flags):
            e = try alloc("nat")
            u32(e, NFTNL_EXPR_NAT_TYPE, type)
            u32(e, NFTNL_EXPR_NAT_FAMILY, family)
            u32(e, NFTNL_EXPR_NAT_REG_ADDR_MIN, addrMin)
            u32(e, NFTNL_EXPR_NAT_REG_PROTO_MIN, protoMin)
            if flags != 0 { u32(e, NFTNL_EXPR_NAT_FLAGS, flags) }
        case .masq(let flags):
            e = try alloc("masq")
            if flags != 0 { u32(e, NFTNL_EXPR_MASQ_FLAGS, flags) }
        case .reject(let type, let code):
            e = try alloc("reject")
            u32(e, NFTNL_EXPR_REJECT_TYPE, type)
            nftnl_expr_set_u8(e, Attr.id(NFTNL_EXPR_REJECT_CODE), code)
        case .unsupported(let name):
            throw LoweringError(message: "cannot build a \(name) expression")
        }
        return e
    }

    /// Reads a dumped expression back, normalised to the shape `make` builds: the kernel adds
    /// attributes nft leaves to their defaults (lookup flags 0, bitwise op mask-xor, dynset
    /// flags 0 and timeout 0, nat max registers equal to the min ones and the flags they imply,
    /// see `Expression.normalized`).
    static func read(_ e: OpaquePointer) -> Expression {
        func has(_ attribute: Int) -> Bool { nftnl_expr_is_set(e, Attr.id(attribute)) }
        func u32(_ attribute: Int) -> UInt32 { nftnl_expr_get_u32(e, Attr.id(attribute)) }
        func blob(_ attribute: Int) -> [UInt8] {
            var length: UInt32 = 0
            let pointer = nftnl_expr_get(e, Attr.id(attribute), &length)
            return Attr.bytes(pointer, length)
        }
        func string(_ attribute: Int) -> String? { has(attribute) ? Attr.string(nftnl_expr_get_str(e, Attr.id(attribute))) : nil }

        let name = Attr.string(nftnl_expr_get_str(e, Attr.id(NFTNL_EXPR_NAME))) ?? "?"
        switch name {
        case "payload" where has(NFTNL_EXPR_PAYLOAD_DREG) && !has(NFTNL_EXPR_PAYLOAD_SREG):
            return .payload(base: u32(NFTNL_EXPR_PAYLOAD_BASE), offset: u32(NFTNL_EXPR_PAYLOAD_OFFSET),
                            length: u32(NFTNL_EXPR_PAYLOAD_LEN), dreg: u32(NFTNL_EXPR_PAYLOAD_DREG))
        case "meta" where has(NFTNL_EXPR_META_DREG):
            return .meta(key: u32(NFTNL_EXPR_META_KEY), dreg: u32(NFTNL_EXPR_META_DREG))
        case "meta" where has(NFTNL_EXPR_META_SREG):
            return .metaSet(key: u32(NFTNL_EXPR_META_KEY), sreg: u32(NFTNL_EXPR_META_SREG))
        case "ct" where has(NFTNL_EXPR_CT_DREG):
            return .ct(key: u32(NFTNL_EXPR_CT_KEY), dreg: u32(NFTNL_EXPR_CT_DREG),
                       direction: has(NFTNL_EXPR_CT_DIR) ? nftnl_expr_get_u8(e, Attr.id(NFTNL_EXPR_CT_DIR)) : nil)
        case "fib":
            return .fib(flags: u32(NFTNL_EXPR_FIB_FLAGS), result: u32(NFTNL_EXPR_FIB_RESULT), dreg: u32(NFTNL_EXPR_FIB_DREG))
        case "cmp":
            return .cmp(sreg: u32(NFTNL_EXPR_CMP_SREG), op: u32(NFTNL_EXPR_CMP_OP), data: blob(NFTNL_EXPR_CMP_DATA))
        case "bitwise" where !has(NFTNL_EXPR_BITWISE_OP) || u32(NFTNL_EXPR_BITWISE_OP) == K.bitwiseMaskXor:
            let mask = blob(NFTNL_EXPR_BITWISE_MASK), xor = blob(NFTNL_EXPR_BITWISE_XOR)
            guard mask.count == Int(u32(NFTNL_EXPR_BITWISE_LEN)), xor.count == mask.count else { return .unsupported("bitwise") }
            return .bitwise(sreg: u32(NFTNL_EXPR_BITWISE_SREG), dreg: u32(NFTNL_EXPR_BITWISE_DREG), mask: mask, xor: xor)
        case "byteorder":
            return .byteorder(sreg: u32(NFTNL_EXPR_BYTEORDER_SREG), dreg: u32(NFTNL_EXPR_BYTEORDER_DREG), op: u32(NFTNL_EXPR_BYTEORDER_OP),
                              length: u32(NFTNL_EXPR_BYTEORDER_LEN), size: u32(NFTNL_EXPR_BYTEORDER_SIZE))
        case "dynset" where !has(NFTNL_EXPR_DYNSET_EXPR) && !has(NFTNL_EXPR_DYNSET_EXPRESSIONS) && u32(NFTNL_EXPR_DYNSET_FLAGS) == 0:
            guard let set = string(NFTNL_EXPR_DYNSET_SET_NAME) else { return .unsupported("dynset") }
            return .dynset(op: u32(NFTNL_EXPR_DYNSET_OP), sregKey: u32(NFTNL_EXPR_DYNSET_SREG_KEY),
                           sregData: has(NFTNL_EXPR_DYNSET_SREG_DATA) ? u32(NFTNL_EXPR_DYNSET_SREG_DATA) : nil, set: set,
                           timeout: has(NFTNL_EXPR_DYNSET_TIMEOUT) ? nftnl_expr_get_u64(e, Attr.id(NFTNL_EXPR_DYNSET_TIMEOUT)) : 0)
        case "lookup":
            guard let set = string(NFTNL_EXPR_LOOKUP_SET) else { return .unsupported("lookup") }
            return .lookup(sreg: u32(NFTNL_EXPR_LOOKUP_SREG), dreg: has(NFTNL_EXPR_LOOKUP_DREG) ? u32(NFTNL_EXPR_LOOKUP_DREG) : nil,
                           set: set, flags: u32(NFTNL_EXPR_LOOKUP_FLAGS))
        case "numgen":
            return .numgen(dreg: u32(NFTNL_EXPR_NG_DREG), modulus: u32(NFTNL_EXPR_NG_MODULUS),
                           type: u32(NFTNL_EXPR_NG_TYPE), offset: u32(NFTNL_EXPR_NG_OFFSET))
        case "immediate" where has(NFTNL_EXPR_IMM_VERDICT):
            guard u32(NFTNL_EXPR_IMM_DREG) == K.regVerdict else { return .unsupported("immediate") }
            return .immediateVerdict(code: Int32(bitPattern: u32(NFTNL_EXPR_IMM_VERDICT)), chain: string(NFTNL_EXPR_IMM_CHAIN))
        case "immediate" where has(NFTNL_EXPR_IMM_DATA):
            return .immediateData(dreg: u32(NFTNL_EXPR_IMM_DREG), data: blob(NFTNL_EXPR_IMM_DATA))
        case "nat":
            let addrMin = u32(NFTNL_EXPR_NAT_REG_ADDR_MIN), protoMin = u32(NFTNL_EXPR_NAT_REG_PROTO_MIN)
            guard !has(NFTNL_EXPR_NAT_REG_ADDR_MAX) || u32(NFTNL_EXPR_NAT_REG_ADDR_MAX) == addrMin,
                  !has(NFTNL_EXPR_NAT_REG_PROTO_MAX) || u32(NFTNL_EXPR_NAT_REG_PROTO_MAX) == protoMin
            else { return .unsupported("nat with a range") }
            return Expression.nat(type: u32(NFTNL_EXPR_NAT_TYPE), family: u32(NFTNL_EXPR_NAT_FAMILY), addrMin: addrMin, protoMin: protoMin,
                                  flags: u32(NFTNL_EXPR_NAT_FLAGS)).normalized
        case "masq" where !has(NFTNL_EXPR_MASQ_REG_PROTO_MIN):
            return .masq(flags: u32(NFTNL_EXPR_MASQ_FLAGS))
        case "reject":
            return .reject(type: u32(NFTNL_EXPR_REJECT_TYPE), code: nftnl_expr_get_u8(e, Attr.id(NFTNL_EXPR_REJECT_CODE)))
        default:
            return .unsupported(name)
        }
    }
}
