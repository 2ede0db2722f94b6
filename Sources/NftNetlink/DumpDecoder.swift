internal import CNftables
import NftIR
import ServiceModel
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Dumped rules and set elements → the IR, straight from their netlink attributes. The strings
/// that repeat throughout a read (set and chain names in expressions and verdicts, comments) are
/// decoded once each and shared.
struct DumpDecoder {
    private var names = Interner<String>()
    private var comments = Interner<Comment?>()
    /// The expressions of the rule being decoded; one buffer for the whole dump.
    private var expressions: [Expression] = []

    /// One NFT_MSG_NEWRULE message of a dump of `chain`.
    mutating func rule(_ message: UnsafePointer<nlmsghdr>, ref: TableRef, chain: Name, sets: SetCatalog) throws(BackendError) -> Rule {
        expressions.removeAll(keepingCapacity: true)
        var handle: UInt64 = 0
        var comment: Comment?
        var chainName: Attribute?
        for attribute in Attributes(message: message) {
            switch Int(attribute.type) {
            case Int(NFTA_RULE_CHAIN.rawValue): chainName = attribute
            case Int(NFTA_RULE_HANDLE.rawValue): handle = attribute.u64
            case Int(NFTA_RULE_EXPRESSIONS.rawValue):
                for element in attribute.nested where element.type == UInt16(NFTA_LIST_ELEM.rawValue) {
                    expressions.append(expression(element))
                }
            case Int(NFTA_RULE_USERDATA.rawValue):
                comment = comments.value(for: attribute.value) { Userdata(bytes: Array($0)).string(K.udataRuleComment).map(Comment.init) }
            default: break
            }
        }
        guard let chainName, chainName.holds(chain.rawValue) else {
            throw BackendError(errno: EPROTO, message: "table \(ref): asked for the rules of chain \(chain), got one of \(chainName?.string ?? "no chain")")
        }
        guard let statements = Raising.rule(expressions, family: ref.family, sets: sets) else {
            throw BackendError(errno: EPROTO, message: "table \(ref): chain \(chain): rule (handle \(handle)) is not one nftproxy writes (edited by hand or by another tool?): "
                               + expressions.map { "[ \($0) ]" }.joined(separator: " "))
        }
        return Rule(statements, comment: comment)
    }

    /// One NFTA_LIST_ELEM of a rule's NFTA_RULE_EXPRESSIONS, normalised to the shape `Lowering`
    /// builds: the kernel adds attributes nft leaves to their defaults (lookup flags 0, bitwise op
    /// mask-xor, dynset flags 0 and timeout 0, nat max registers equal to the min ones and the
    /// flags they imply, see `Expression.normalized`).
    mutating func expression(_ element: Attribute) -> Expression {
        var name: Attribute?
        var a = ExpressionAttributes()
        for attribute in element.nested {
            switch Int(attribute.type) {
            case Int(NFTA_EXPR_NAME.rawValue): name = attribute
            case Int(NFTA_EXPR_DATA.rawValue): a = ExpressionAttributes(attribute.value)
            default: break
            }
        }
        guard let kind = name.flatMap({ ExpressionKind(name: $0.text) }) else { return .unsupported(name?.string ?? "") }
        switch kind {
        case .payload where a.has(NFTA_PAYLOAD_DREG) && !a.has(NFTA_PAYLOAD_SREG):
            return .payload(base: a.u32(NFTA_PAYLOAD_BASE), offset: a.u32(NFTA_PAYLOAD_OFFSET), length: a.u32(NFTA_PAYLOAD_LEN), dreg: a.u32(NFTA_PAYLOAD_DREG))
        case .meta where a.has(NFTA_META_DREG):
            return .meta(key: a.u32(NFTA_META_KEY), dreg: a.u32(NFTA_META_DREG))
        case .meta where a.has(NFTA_META_SREG):
            return .metaSet(key: a.u32(NFTA_META_KEY), sreg: a.u32(NFTA_META_SREG))
        case .ct where a.has(NFTA_CT_DREG):
            return .ct(key: a.u32(NFTA_CT_KEY), dreg: a.u32(NFTA_CT_DREG), direction: a.has(NFTA_CT_DIRECTION) ? a.u8(NFTA_CT_DIRECTION) : nil)
        case .fib:
            return .fib(flags: a.u32(NFTA_FIB_FLAGS), result: a.u32(NFTA_FIB_RESULT), dreg: a.u32(NFTA_FIB_DREG))
        case .cmp:
            guard let data = a.dataValue(NFTA_CMP_DATA) else { return .unsupported("cmp") }
            return .cmp(sreg: a.u32(NFTA_CMP_SREG), op: a.u32(NFTA_CMP_OP), data: data)
        case .bitwise where !a.has(NFTA_BITWISE_OP) || a.u32(NFTA_BITWISE_OP) == K.bitwiseMaskXor:
            guard let mask = a.dataValue(NFTA_BITWISE_MASK), let xor = a.dataValue(NFTA_BITWISE_XOR),
                  mask.count == Int(a.u32(NFTA_BITWISE_LEN)), xor.count == mask.count else { return .unsupported("bitwise") }
            return .bitwise(sreg: a.u32(NFTA_BITWISE_SREG), dreg: a.u32(NFTA_BITWISE_DREG), mask: mask, xor: xor)
        case .byteorder:
            return .byteorder(sreg: a.u32(NFTA_BYTEORDER_SREG), dreg: a.u32(NFTA_BYTEORDER_DREG), op: a.u32(NFTA_BYTEORDER_OP),
                              length: a.u32(NFTA_BYTEORDER_LEN), size: a.u32(NFTA_BYTEORDER_SIZE))
        case .dynset where !a.has(NFTA_DYNSET_EXPR) && !a.has(NFTA_DYNSET_EXPRESSIONS) && a.u32(NFTA_DYNSET_FLAGS) == 0:
            guard let set = a.attribute(NFTA_DYNSET_SET_NAME) else { return .unsupported("dynset") }
            return .dynset(op: a.u32(NFTA_DYNSET_OP), sregKey: a.u32(NFTA_DYNSET_SREG_KEY),
                           sregData: a.has(NFTA_DYNSET_SREG_DATA) ? a.u32(NFTA_DYNSET_SREG_DATA) : nil, set: intern(set),
                           timeout: a.has(NFTA_DYNSET_TIMEOUT) ? a.u64(NFTA_DYNSET_TIMEOUT) : 0)
        case .lookup:
            guard let set = a.attribute(NFTA_LOOKUP_SET) else { return .unsupported("lookup") }
            return .lookup(sreg: a.u32(NFTA_LOOKUP_SREG), dreg: a.has(NFTA_LOOKUP_DREG) ? a.u32(NFTA_LOOKUP_DREG) : nil,
                           set: intern(set), flags: a.u32(NFTA_LOOKUP_FLAGS))
        case .numgen:
            return .numgen(dreg: a.u32(NFTA_NG_DREG), modulus: a.u32(NFTA_NG_MODULUS), type: a.u32(NFTA_NG_TYPE), offset: a.u32(NFTA_NG_OFFSET))
        case .immediate:
            guard let value = a.attribute(NFTA_IMMEDIATE_DATA) else { return .unsupported("immediate") }
            if let verdict = value.dataVerdict {
                guard a.u32(NFTA_IMMEDIATE_DREG) == K.regVerdict else { return .unsupported("immediate") }
                return .immediateVerdict(code: verdict.code, chain: verdict.chain.map { intern($0) })
            }
            guard let bytes = value.dataValue.flatMap(RegisterValue.init) else { return .unsupported("immediate") }
            return .immediateData(dreg: a.u32(NFTA_IMMEDIATE_DREG), data: bytes)
        case .nat:
            let addrMin = a.u32(NFTA_NAT_REG_ADDR_MIN), protoMin = a.u32(NFTA_NAT_REG_PROTO_MIN)
            guard !a.has(NFTA_NAT_REG_ADDR_MAX) || a.u32(NFTA_NAT_REG_ADDR_MAX) == addrMin,
                  !a.has(NFTA_NAT_REG_PROTO_MAX) || a.u32(NFTA_NAT_REG_PROTO_MAX) == protoMin
            else { return .unsupported("nat with a range") }
            return Expression.nat(type: a.u32(NFTA_NAT_TYPE), family: a.u32(NFTA_NAT_FAMILY), addrMin: addrMin, protoMin: protoMin,
                                  flags: a.u32(NFTA_NAT_FLAGS)).normalized
        case .masq where !a.has(NFTA_MASQ_REG_PROTO_MIN):
            return .masq(flags: a.u32(NFTA_MASQ_FLAGS))
        case .reject:
            return .reject(type: a.u32(NFTA_REJECT_TYPE), code: a.u8(NFTA_REJECT_ICMP_CODE))
        default:
            return .unsupported(kind.rawValue)
        }
    }

    /// One element (an NFTA_LIST_ELEM of NFTA_SET_ELEM_LIST_ELEMENTS) of `set`, with its key bytes to sort by.
    mutating func element(_ attribute: Attribute, set: NamedSet, ref: TableRef) throws(BackendError) -> (order: ElementOrder, element: Element) {
        func unexpected(_ what: String) -> BackendError {
            BackendError(errno: EPROTO, message: "table \(ref): an element of \(set.name) \(what), which nftproxy does not write")
        }
        var key: UnsafeRawBufferPointer?, end: UnsafeRawBufferPointer?
        var data: Attribute?
        var comment: Comment?
        var flags: UInt32 = 0
        var hasExpressions = false, hasTimeout = false
        for field in attribute.nested {
            switch Int(field.type) {
            case Int(NFTA_SET_ELEM_KEY.rawValue): key = field.dataValue
            case Int(NFTA_SET_ELEM_KEY_END.rawValue): end = field.dataValue
            case Int(NFTA_SET_ELEM_DATA.rawValue): data = field
            case Int(NFTA_SET_ELEM_FLAGS.rawValue): flags = field.u32
            case Int(NFTA_SET_ELEM_EXPR.rawValue), Int(NFTA_SET_ELEM_EXPRESSIONS.rawValue), Int(NFTA_SET_ELEM_OBJREF.rawValue): hasExpressions = true
            case Int(NFTA_SET_ELEM_TIMEOUT.rawValue), Int(NFTA_SET_ELEM_EXPIRATION.rawValue): hasTimeout = true
            case Int(NFTA_SET_ELEM_USERDATA.rawValue):
                comment = comments.value(for: field.value) { Userdata(bytes: Array($0)).string(K.udataSetElemComment).map(Comment.init) }
            default: break
            }
        }
        guard let key else { throw unexpected("has no key") }
        guard (end != nil) == set.isConcatenatedInterval else { throw unexpected(end == nil ? "has no end key" : "has an end key") }
        guard let decoded = ElementKey.decode(low: key, high: end ?? key, types: set.key) else {
            throw unexpected("has a key that does not decode")
        }
        if flags != 0 { throw unexpected("has flags") }
        guard !hasExpressions else { throw unexpected("has expressions") }
        // Entries of a timeout set come with their timeout and time left, which the IR leaves out.
        guard set.flags.contains(.timeout) || !hasTimeout else { throw unexpected("has a timeout") }
        var verdict: Verdict?
        var values: [KeyValue] = []
        let dumpedVerdict = data?.dataVerdict
        if set.isMap {
            guard let dumpedVerdict else { throw unexpected("has no verdict") }
            let chain = dumpedVerdict.chain.map { intern($0) }
            guard let decodedVerdict = Raising.verdict(code: dumpedVerdict.code, chain: chain) else { throw unexpected("has verdict \(dumpedVerdict.code)") }
            verdict = decodedVerdict
        } else if dumpedVerdict != nil {
            throw unexpected("has a verdict outside a verdict map")
        }
        let dumpedValue = data?.dataValue
        if !set.data.isEmpty {
            guard let dumpedValue, let decodedValue = ElementKey.decode(low: dumpedValue, high: dumpedValue, types: set.data) else {
                throw unexpected("has no data, or data that does not decode")
            }
            values = decodedValue
        } else if dumpedValue != nil {
            throw unexpected("has data outside a data map")
        }
        return (ElementOrder(key), Element(decoded, verdict: verdict, data: values, comment: comment))
    }

    private mutating func intern(_ attribute: Attribute) -> String {
        names.value(for: attribute.text) { String(decoding: $0, as: UTF8.self) }
    }
}

/// The kinds of expression nftproxy writes, told apart by the bytes of their NFTA_EXPR_NAME
/// (a read-back meets millions of names, and comparing `String`s costs more than two words).
enum ExpressionKind: String, CaseIterable {
    // In the order they are looked for: the most frequent in nftproxy's rules first.
    case cmp, immediate, payload, meta, numgen, nat, lookup, dynset, byteorder, bitwise, ct, fib, masq, reject

    init?(name: UnsafeRawBufferPointer) {
        guard let key = NameKey(name) else { return nil }
        guard let kind = Self.keys.first(where: { $0.key == key })?.kind else { return nil }
        self = kind
    }

    private static let keys: [(key: NameKey, kind: ExpressionKind)] = allCases.map { kind in
        var name = kind.rawValue
        return (name.withUTF8 { NameKey(UnsafeRawBufferPointer($0))! }, kind)
    }

    /// A name of at most 16 bytes, packed into two words.
    private struct NameKey: Equatable {
        var head: UInt64 = 0, tail: UInt64 = 0
        var count: Int

        init?(_ bytes: UnsafeRawBufferPointer) {
            guard bytes.count <= 16 else { return nil }
            count = bytes.count
            withUnsafeMutableBytes(of: &head) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes.prefix(8))) }
            if bytes.count > 8 {
                withUnsafeMutableBytes(of: &tail) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes.dropFirst(8))) }
            }
        }
    }
}

/// An expression's attributes by type, as mnl_attr_parse_nested would index them: every
/// NFTA_<expression>_* number is below 16. Each is kept as its place in the expression's
/// NFTA_EXPR_DATA (offset and length, 16 bits each: a netlink message is shorter than 64 KiB).
struct ExpressionAttributes {
    private var base: UnsafeRawPointer?
    private var present: UInt16 = 0
    private var places: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32,
                         UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)

    init() {}

    /// The attributes nested in `data` (an NFTA_EXPR_DATA value).
    init(_ data: UnsafeRawBufferPointer) {
        guard let start = data.baseAddress, data.count <= 0xffff else { return }
        base = start
        for attribute in Attributes(data) where attribute.type < 16 {
            present |= 1 << attribute.type
            let place = UInt32(attribute.value.baseAddress! - start) << 16 | UInt32(attribute.value.count)
            withUnsafeMutableBytes(of: &places) { $0.storeBytes(of: place, toByteOffset: Int(attribute.type) * 4, as: UInt32.self) }
        }
    }

    func has<T: RawRepresentable>(_ type: T) -> Bool where T.RawValue: BinaryInteger {
        present & (1 << UInt16(type.rawValue)) != 0
    }

    func attribute<T: RawRepresentable>(_ type: T) -> Attribute? where T.RawValue: BinaryInteger {
        guard has(type), let base else { return nil }
        let place = withUnsafeBytes(of: places) { $0.load(fromByteOffset: Int(type.rawValue) * 4, as: UInt32.self) }
        return Attribute(type: UInt16(type.rawValue), value: UnsafeRawBufferPointer(start: base + Int(place >> 16), count: Int(place & 0xffff)))
    }

    /// 0 when absent, as libnftnl's getters answer.
    func u32<T: RawRepresentable>(_ type: T) -> UInt32 where T.RawValue: BinaryInteger { attribute(type)?.u32 ?? 0 }
    func u64<T: RawRepresentable>(_ type: T) -> UInt64 where T.RawValue: BinaryInteger { attribute(type)?.u64 ?? 0 }
    func u8<T: RawRepresentable>(_ type: T) -> UInt8 where T.RawValue: BinaryInteger { attribute(type)?.u8 ?? 0 }

    /// The NFTA_DATA_VALUE of an nft_data attribute; nil when absent or longer than a register
    /// constant (nftproxy writes none such).
    func dataValue<T: RawRepresentable>(_ type: T) -> RegisterValue? where T.RawValue: BinaryInteger {
        attribute(type)?.dataValue.flatMap(RegisterValue.init)
    }
}
