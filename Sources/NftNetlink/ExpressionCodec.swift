internal import CNftables
import NftIR
import ServiceModel

/// Lowered expressions written straight into a rule's NFTA_RULE_EXPRESSIONS: each one an
/// NFTA_LIST_ELEM holding NFTA_EXPR_NAME and NFTA_EXPR_DATA, with exactly the attributes nft
/// 1.0.6 sends, in libnftnl 1.2.4's order. (`DumpDecoder.expression` reads them back.) Nothing
/// is built per expression: a full sync lowers millions of them.
extension MessageWriter: ExpressionSink {
    /// Opens the list element, writes NFTA_EXPR_NAME and opens NFTA_EXPR_DATA, which the
    /// expression's attributes go in; `close` ends both.
    private mutating func open(_ name: StaticString) -> (element: Int, data: Int) {
        let element = beginNested(A.listElement)
        put(A.id(NFTA_EXPR_NAME), string: name)
        return (element, beginNested(A.id(NFTA_EXPR_DATA)))
    }

    private mutating func close(_ nests: (element: Int, data: Int)) {
        endNested(nests.data)
        endNested(nests.element)
    }

    private mutating func u32(_ type: some RawRepresentable<UInt32>, _ value: UInt32) { put(A.id(type), u32: value) }

    mutating func payload(base: UInt32, offset: UInt32, length: UInt32, dreg: UInt32) {
        let nests = open("payload")
        u32(NFTA_PAYLOAD_DREG, dreg)
        u32(NFTA_PAYLOAD_BASE, base)
        u32(NFTA_PAYLOAD_OFFSET, offset)
        u32(NFTA_PAYLOAD_LEN, length)
        close(nests)
    }

    mutating func meta(key: UInt32, dreg: UInt32) {
        let nests = open("meta")
        u32(NFTA_META_KEY, key)
        u32(NFTA_META_DREG, dreg)
        close(nests)
    }

    mutating func metaSet(key: UInt32, sreg: UInt32) {
        let nests = open("meta")
        u32(NFTA_META_KEY, key)
        u32(NFTA_META_SREG, sreg)
        close(nests)
    }

    mutating func ct(key: UInt32, dreg: UInt32, direction: UInt8?) {
        let nests = open("ct")
        u32(NFTA_CT_KEY, key)
        u32(NFTA_CT_DREG, dreg)
        if let direction { put(A.id(NFTA_CT_DIRECTION), u8: direction) }
        close(nests)
    }

    mutating func fib(flags: UInt32, result: UInt32, dreg: UInt32) {
        let nests = open("fib")
        u32(NFTA_FIB_FLAGS, flags)
        u32(NFTA_FIB_RESULT, result)
        u32(NFTA_FIB_DREG, dreg)
        close(nests)
    }

    mutating func cmp(sreg: UInt32, op: UInt32, data: RegisterValue) {
        let nests = open("cmp")
        u32(NFTA_CMP_SREG, sreg)
        u32(NFTA_CMP_OP, op)
        putData(A.id(NFTA_CMP_DATA), value: data)
        close(nests)
    }

    mutating func bitwise(sreg: UInt32, dreg: UInt32, mask: RegisterValue, xor: RegisterValue, op: UInt32?) {
        let nests = open("bitwise")
        u32(NFTA_BITWISE_SREG, sreg)
        u32(NFTA_BITWISE_DREG, dreg)
        if let op { u32(NFTA_BITWISE_OP, op) }
        u32(NFTA_BITWISE_LEN, UInt32(mask.count))
        putData(A.id(NFTA_BITWISE_MASK), value: mask)
        putData(A.id(NFTA_BITWISE_XOR), value: xor)
        close(nests)
    }

    mutating func byteorder(sreg: UInt32, dreg: UInt32, op: UInt32, length: UInt32, size: UInt32) {
        let nests = open("byteorder")
        u32(NFTA_BYTEORDER_SREG, sreg)
        u32(NFTA_BYTEORDER_DREG, dreg)
        u32(NFTA_BYTEORDER_OP, op)
        u32(NFTA_BYTEORDER_LEN, length)
        u32(NFTA_BYTEORDER_SIZE, size)
        close(nests)
    }

    mutating func lookup(sreg: UInt32, dreg: UInt32?, set: Name, flags: UInt32) {
        let nests = open("lookup")
        u32(NFTA_LOOKUP_SREG, sreg)
        if let dreg { u32(NFTA_LOOKUP_DREG, dreg) }
        put(A.id(NFTA_LOOKUP_SET), string: set.rawValue)
        if flags != 0 { u32(NFTA_LOOKUP_FLAGS, flags) }
        close(nests)
    }

    mutating func dynset(op: UInt32, sregKey: UInt32, sregData: UInt32?, set: Name, timeout: UInt64) {
        let nests = open("dynset")
        u32(NFTA_DYNSET_SREG_KEY, sregKey)
        if let sregData { u32(NFTA_DYNSET_SREG_DATA, sregData) }
        u32(NFTA_DYNSET_OP, op)
        if timeout != 0 { put(A.id(NFTA_DYNSET_TIMEOUT), u64: timeout) }
        put(A.id(NFTA_DYNSET_SET_NAME), string: set.rawValue)
        close(nests)
    }

    mutating func numgen(dreg: UInt32, modulus: UInt32, type: UInt32, offset: UInt32) {
        let nests = open("numgen")
        u32(NFTA_NG_DREG, dreg)
        u32(NFTA_NG_MODULUS, modulus)
        u32(NFTA_NG_TYPE, type)
        u32(NFTA_NG_OFFSET, offset)
        close(nests)
    }

    mutating func immediateData(dreg: UInt32, data: RegisterValue) {
        let nests = open("immediate")
        u32(NFTA_IMMEDIATE_DREG, dreg)
        putData(A.id(NFTA_IMMEDIATE_DATA), value: data)
        close(nests)
    }

    mutating func immediateVerdict(code: Int32, chain: Name?) {
        let nests = open("immediate")
        u32(NFTA_IMMEDIATE_DREG, K.regVerdict)
        putVerdict(A.id(NFTA_IMMEDIATE_DATA), code: code, chain: chain)
        close(nests)
    }

    mutating func nat(type: UInt32, family: UInt32, addrMin: UInt32, protoMin: UInt32, flags: UInt32) {
        let nests = open("nat")
        u32(NFTA_NAT_TYPE, type)
        u32(NFTA_NAT_FAMILY, family)
        u32(NFTA_NAT_REG_ADDR_MIN, addrMin)
        u32(NFTA_NAT_REG_PROTO_MIN, protoMin)
        if flags != 0 { u32(NFTA_NAT_FLAGS, flags) }
        close(nests)
    }

    mutating func masq(flags: UInt32) {
        let nests = open("masq")
        if flags != 0 { u32(NFTA_MASQ_FLAGS, flags) }
        close(nests)
    }

    mutating func reject(type: UInt32, code: UInt8) {
        let nests = open("reject")
        u32(NFTA_REJECT_TYPE, type)
        put(A.id(NFTA_REJECT_ICMP_CODE), u8: code)
        close(nests)
    }
}
