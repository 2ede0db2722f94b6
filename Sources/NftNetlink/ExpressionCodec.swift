internal import CNftables
import NftIR
import ServiceModel

/// Expression → its NFTA_LIST_ELEM payload (NFTA_EXPR_NAME, NFTA_EXPR_DATA), with exactly the
/// attributes nft 1.0.6 sends, in libnftnl 1.2.4's order. (`DumpDecoder.expression` reads them back.)
enum ExpressionCodec {
    static func put(_ expression: Expression, into message: inout MessageWriter) throws(LoweringError) {
        func data(_ type: some RawRepresentable<UInt32>, _ value: [UInt8]) throws(LoweringError) {
            guard !value.isEmpty, value.count <= 64 else { throw LoweringError(message: "expression data of \(value.count) bytes (1…64 allowed)") }
            message.putData(A.id(type), value: value)
        }
        func u32(_ type: some RawRepresentable<UInt32>, _ value: UInt32) { message.put(A.id(type), u32: value) }
        /// NFTA_EXPR_NAME, then the opened NFTA_EXPR_DATA nest the expression's attributes go in.
        func open(_ name: String) -> Int {
            message.put(A.id(NFTA_EXPR_NAME), string: name)
            return message.beginNested(A.id(NFTA_EXPR_DATA))
        }

        let nest: Int
        switch expression {
        case .payload(let base, let offset, let length, let dreg):
            nest = open("payload")
            u32(NFTA_PAYLOAD_DREG, dreg)
            u32(NFTA_PAYLOAD_BASE, base)
            u32(NFTA_PAYLOAD_OFFSET, offset)
            u32(NFTA_PAYLOAD_LEN, length)
        case .meta(let key, let dreg):
            nest = open("meta")
            u32(NFTA_META_KEY, key)
            u32(NFTA_META_DREG, dreg)
        case .metaSet(let key, let sreg):
            nest = open("meta")
            u32(NFTA_META_KEY, key)
            u32(NFTA_META_SREG, sreg)
        case .ct(let key, let dreg, let direction):
            nest = open("ct")
            u32(NFTA_CT_KEY, key)
            u32(NFTA_CT_DREG, dreg)
            if let direction { message.put(A.id(NFTA_CT_DIRECTION), u8: direction) }
        case .fib(let flags, let result, let dreg):
            nest = open("fib")
            u32(NFTA_FIB_FLAGS, flags)
            u32(NFTA_FIB_RESULT, result)
            u32(NFTA_FIB_DREG, dreg)
        case .cmp(let sreg, let op, let value):
            nest = open("cmp")
            u32(NFTA_CMP_SREG, sreg)
            u32(NFTA_CMP_OP, op)
            try data(NFTA_CMP_DATA, value)
        case .bitwise(let sreg, let dreg, let mask, let xor):
            guard mask.count == xor.count else { throw LoweringError(message: "bitwise mask and xor differ in length") }
            nest = open("bitwise")
            u32(NFTA_BITWISE_SREG, sreg)
            u32(NFTA_BITWISE_DREG, dreg)
            u32(NFTA_BITWISE_LEN, UInt32(mask.count))
            try data(NFTA_BITWISE_MASK, mask)
            try data(NFTA_BITWISE_XOR, xor)
        case .byteorder(let sreg, let dreg, let op, let length, let size):
            nest = open("byteorder")
            u32(NFTA_BYTEORDER_SREG, sreg)
            u32(NFTA_BYTEORDER_DREG, dreg)
            u32(NFTA_BYTEORDER_OP, op)
            u32(NFTA_BYTEORDER_LEN, length)
            u32(NFTA_BYTEORDER_SIZE, size)
        case .dynset(let op, let sregKey, let sregData, let set, let timeout):
            nest = open("dynset")
            u32(NFTA_DYNSET_SREG_KEY, sregKey)
            if let sregData { u32(NFTA_DYNSET_SREG_DATA, sregData) }
            u32(NFTA_DYNSET_OP, op)
            if timeout != 0 { message.put(A.id(NFTA_DYNSET_TIMEOUT), u64: timeout) }
            message.put(A.id(NFTA_DYNSET_SET_NAME), string: set)
        case .lookup(let sreg, let dreg, let set, let flags):
            nest = open("lookup")
            u32(NFTA_LOOKUP_SREG, sreg)
            if let dreg { u32(NFTA_LOOKUP_DREG, dreg) }
            message.put(A.id(NFTA_LOOKUP_SET), string: set)
            if flags != 0 { u32(NFTA_LOOKUP_FLAGS, flags) }
        case .numgen(let dreg, let modulus, let type, let offset):
            nest = open("numgen")
            u32(NFTA_NG_DREG, dreg)
            u32(NFTA_NG_MODULUS, modulus)
            u32(NFTA_NG_TYPE, type)
            u32(NFTA_NG_OFFSET, offset)
        case .immediateData(let dreg, let value):
            nest = open("immediate")
            u32(NFTA_IMMEDIATE_DREG, dreg)
            try data(NFTA_IMMEDIATE_DATA, value)
        case .immediateVerdict(let code, let chain):
            nest = open("immediate")
            u32(NFTA_IMMEDIATE_DREG, K.regVerdict)
            message.putVerdict(A.id(NFTA_IMMEDIATE_DATA), code: code, chain: chain)
        case .nat(let type, let family, let addrMin, let protoMin, let flags):
            nest = open("nat")
            u32(NFTA_NAT_TYPE, type)
            u32(NFTA_NAT_FAMILY, family)
            u32(NFTA_NAT_REG_ADDR_MIN, addrMin)
            u32(NFTA_NAT_REG_PROTO_MIN, protoMin)
            if flags != 0 { u32(NFTA_NAT_FLAGS, flags) }
        case .masq(let flags):
            nest = open("masq")
            if flags != 0 { u32(NFTA_MASQ_FLAGS, flags) }
        case .reject(let type, let code):
            nest = open("reject")
            u32(NFTA_REJECT_TYPE, type)
            message.put(A.id(NFTA_REJECT_ICMP_CODE), u8: code)
        case .unsupported(let name):
            throw LoweringError(message: "cannot build a \(name) expression")
        }
        message.endNested(nest)
    }
}
