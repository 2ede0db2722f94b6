import NftIR
import ServiceModel

/// nftnl userdata: a run of TLVs (u8 type, u8 length, value), as `nftnl_udata_put*` writes them.
/// nft stores comments and its set metadata this way; the kernel keeps the bytes verbatim.
struct Userdata: Hashable {
    private(set) var bytes: [UInt8] = []

    init() {}

    init(bytes: [UInt8]) { self.bytes = bytes }

    mutating func put(_ type: UInt8, _ value: [UInt8]) {
        precondition(value.count <= 255, "a userdata value is at most 255 bytes")
        bytes += [type, UInt8(value.count)] + value
    }

    /// A host-endian u32, as `nftnl_udata_put_u32` writes it.
    mutating func putU32(_ type: UInt8, _ value: UInt32) {
        put(type, withUnsafeBytes(of: value) { Array($0) })
    }

    /// A NUL-terminated string, as `nftnl_udata_put_strz` writes it.
    mutating func putString(_ type: UInt8, _ text: String) {
        put(type, Array(text.utf8) + [0])
    }

    /// The TLVs in order; nil if the bytes are not a well-formed TLV run.
    var entries: [(type: UInt8, value: [UInt8])]? {
        var out: [(UInt8, [UInt8])] = []
        var index = 0
        while index < bytes.count {
            guard index + 2 <= bytes.count else { return nil }
            let type = bytes[index], length = Int(bytes[index + 1])
            guard index + 2 + length <= bytes.count else { return nil }
            out.append((type, Array(bytes[(index + 2)..<(index + 2 + length)])))
            index += 2 + length
        }
        return out
    }

    /// The string stored under `type`, without its NUL; nil when absent or malformed.
    func string(_ type: UInt8) -> String? {
        guard let value = entries?.first(where: { $0.type == type })?.value else { return nil }
        let text = value.last == 0 ? value.dropLast() : value[...]
        return String(decoding: text, as: UTF8.self)
    }

    /// The set userdata nft 1.0.6 writes for `type KEY [: DATA]; [size N;] [flags …;] [comment "…"]`,
    /// byte for byte (checked with `nft --debug=mnl`), so that `nft list` prints the set as nft
    /// would: the key's byte order (0 for a concatenation), the data's for a map (0 for a verdict
    /// or a concatenation), an empty `typeof` concatenation for a concatenated key and for
    /// concatenated data, the data-interval flag for a map, the comment.
    static func set(_ set: NamedSet) -> Userdata {
        var data = Userdata()
        let concatenatedKey = set.key.count > 1, concatenatedData = set.data.count > 1
        let hasData = set.isMap || !set.data.isEmpty
        data.putU32(K.udataSetKeyByteorder, concatenatedKey ? K.byteorderInvalid : KeyType.byteorder(set.key[0]))
        if hasData {
            data.putU32(K.udataSetDataByteorder, set.isMap || concatenatedData ? K.byteorderInvalid : KeyType.byteorder(set.data[0]))
        }
        if concatenatedKey { data.put(K.udataSetKeyTypeof, emptyConcatenation) }
        if concatenatedData { data.put(K.udataSetDataTypeof, emptyConcatenation) }
        if hasData { data.putU32(K.udataSetDataInterval, 0) }
        if let comment = set.comment { data.putString(K.udataSetComment, comment.text) }
        return data
    }

    /// `typeof` of a concatenation declared with `type`: EXPR_CONCAT with no per-field data.
    private static var emptyConcatenation: [UInt8] {
        var typeof = Userdata()
        typeof.putU32(K.udataTypeofExpr, K.exprConcat)
        typeof.put(K.udataTypeofData, [])
        return typeof.bytes
    }
}

/// Set key types: nft's datatype ids, lengths and the byte order nft records for them.
enum KeyType {
    static func id(_ type: DataType) -> UInt32 {
        switch type {
        case .ipv4Address: K.typeIPv4Address
        case .ipv6Address: K.typeIPv6Address
        case .inetProto: K.typeInetProto
        case .inetService: K.typeInetService
        }
    }

    static func type(id: UInt32) -> DataType? {
        switch id {
        case K.typeIPv4Address: .ipv4Address
        case K.typeIPv6Address: .ipv6Address
        case K.typeInetProto: .inetProto
        case K.typeInetService: .inetService
        default: nil
        }
    }

    /// BYTEORDER_BIG_ENDIAN for addresses and ports; a 1-byte protocol has none.
    static func byteorder(_ type: DataType) -> UInt32 {
        type == .inetProto ? K.byteorderInvalid : K.byteorderBigEndian
    }

    /// NFTA_SET_KEY_TYPE: a concatenation folds its fields' ids, 6 bits each, first field highest.
    static func id(_ key: [DataType]) -> UInt32 {
        key.reduce(0) { ($0 << K.typeBits) | id($1) }
    }

    /// Undoes `id(_:)`; nil for an id that is not a concatenation of known types.
    static func types(id: UInt32) -> [DataType]? {
        var rest = id
        var out: [DataType] = []
        while rest != 0 {
            guard let type = type(id: rest & ((1 << K.typeBits) - 1)) else { return nil }
            out.insert(type, at: 0)
            rest >>= K.typeBits
        }
        return out.isEmpty ? nil : out
    }

    /// NFTA_SET_KEY_LEN: a single field's own length, or a concatenation's fields each padded to 4 bytes.
    static func length(_ key: [DataType]) -> Int {
        key.count == 1 ? key[0].length : key.reduce(0) { $0 + Register.slots($1.length) * 4 }
    }
}

/// Element keys and map data: each field in network order, padded to a 4-byte register in a
/// concatenation. In a concatenated interval set an element is a range per field: NFTA_SET_ELEM_KEY
/// holds each field's first value and NFTA_SET_ELEM_KEY_END its last (inclusive), equal for an
/// exact field, as nft sends them.
enum ElementKey {
    /// A field's first and last value.
    static func bytes(_ value: KeyValue) -> (low: [UInt8], high: [UInt8]) {
        let count = length(of: value)
        return (array(count) { write(value, last: false, into: $0) }, array(count) { write(value, last: true, into: $0) })
    }

    /// The key (or data) of an element that is one value: a range there has nowhere to go.
    static func encode(_ key: [KeyValue]) throws(LoweringError) -> [UInt8] {
        let count = try length(exact: key)
        return array(count) { write(key, last: false, into: $0) }
    }

    /// NFTA_SET_ELEM_KEY and NFTA_SET_ELEM_KEY_END of an element of a concatenated interval set.
    static func range(_ key: [KeyValue]) throws(LoweringError) -> (low: [UInt8], high: [UInt8]) {
        let count = try length(key)
        return (array(count) { write(key, last: false, into: $0) }, array(count) { write(key, last: true, into: $0) })
    }

    /// The bytes of a key or map data: a single field as it is, each field of a concatenation
    /// padded to 4 bytes.
    static func length(_ key: [KeyValue]) throws(LoweringError) -> Int {
        guard !key.isEmpty else { throw LoweringError(message: "an element needs a key") }
        if key.count == 1 { return length(of: key[0]) }
        var count = 0
        for value in key { count += Register.slots(length(of: value)) * 4 }
        guard count <= 64 else { throw LoweringError(message: "an element key of \(count) bytes exceeds NFT_DATA_VALUE_MAXLEN (64)") }
        return count
    }

    /// `length(key)`, for a key that must be one value (no field a range).
    static func length(exact key: [KeyValue]) throws(LoweringError) -> Int {
        for value in key {
            if case .prefix(let cidr) = value, !cidr.isHost {
                throw LoweringError(message: "an element with a range (\(key)) needs a set with the interval flag and a concatenated key")
            }
        }
        return try length(key)
    }

    /// Writes the key's first values (or, with `last`, its last ones) into `out`, which holds
    /// `length(key)` bytes.
    static func write(_ key: [KeyValue], last: Bool, into out: UnsafeMutableRawBufferPointer) {
        guard key.count > 1 else {
            if let value = key.first { write(value, last: last, into: out) }
            return
        }
        var offset = 0
        for value in key {
            let count = length(of: value), padded = Register.slots(count) * 4
            write(value, last: last, into: UnsafeMutableRawBufferPointer(rebasing: out[offset..<(offset + count)]))
            if padded > count { UnsafeMutableRawBufferPointer(rebasing: out[(offset + count)..<(offset + padded)]).initializeMemory(as: UInt8.self, repeating: 0) }
            offset += padded
        }
    }

    private static func length(of value: KeyValue) -> Int {
        switch value {
        case .address(let ip): ip.family.addressLength
        case .prefix(let cidr): cidr.family.addressLength
        case .proto: 1
        case .port: 2
        }
    }

    /// One field, in network order: a prefix's first address, or its last.
    private static func write(_ value: KeyValue, last: Bool, into out: UnsafeMutableRawBufferPointer) {
        switch value {
        case .address(let ip):
            RegisterValue(ip).withUnsafeBytes { out.copyMemory(from: $0) }
        case .prefix(let cidr):
            RegisterValue(cidr.address).withUnsafeBytes { out.copyMemory(from: $0) }
            guard last else { return }
            RegisterValue(maskOf: cidr.prefixLength, count: out.count).withUnsafeBytes { mask in
                for index in 0..<out.count { out[index] |= ~mask[index] }
            }
        case .proto(let proto):
            out[0] = proto.number
        case .port(let port):
            out[0] = UInt8(port >> 8)
            out[1] = UInt8(port & 0xff)
        }
    }

    private static func array(_ count: Int, _ fill: (UnsafeMutableRawBufferPointer) -> Void) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            fill(UnsafeMutableRawBufferPointer(buffer))
            initialized = count
        }
    }

    static func decode(_ bytes: [UInt8], types: [DataType]) -> [KeyValue]? {
        decode(low: bytes, high: bytes, types: types)
    }

    static func decode(_ value: RegisterValue, types: [DataType]) -> [KeyValue]? {
        value.withUnsafeBytes { decode(low: $0, high: $0, types: types) }
    }

    /// Undoes `range(_:)`: a field whose first and last values differ must be an address prefix.
    static func decode(low: [UInt8], high: [UInt8], types: [DataType]) -> [KeyValue]? {
        low.withUnsafeBytes { low in high.withUnsafeBytes { high in decode(low: low, high: high, types: types) } }
    }

    /// The same, straight from dumped bytes: a read-back decodes hundreds of thousands of keys,
    /// and copies none of their fields.
    static func decode(low: UnsafeRawBufferPointer, high: UnsafeRawBufferPointer, types: [DataType]) -> [KeyValue]? {
        guard low.count == KeyType.length(types), high.count == low.count else { return nil }
        var out: [KeyValue] = []
        out.reserveCapacity(types.count)
        var index = 0
        for type in types {
            let width = types.count == 1 ? type.length : Register.slots(type.length) * 4
            // Padding must be zero.
            for padding in (index + type.length)..<(index + width) where low[padding] != 0 || high[padding] != 0 { return nil }
            let field = UnsafeRawBufferPointer(rebasing: low[index..<(index + type.length)])
            let last = UnsafeRawBufferPointer(rebasing: high[index..<(index + type.length)])
            if !field.elementsEqual(last) {
                guard type == .ipv4Address || type == .ipv6Address, let cidr = prefix(Array(field), Array(last)) else { return nil }
                out.append(.prefix(cidr))
            } else {
                switch type {
                case .ipv4Address, .ipv6Address:
                    guard let ip = RegisterValue(field).flatMap({ IPAddress(bytes: $0) }) else { return nil }
                    out.append(.address(ip))
                case .inetProto:
                    guard let proto = L4Protocol.allCases.first(where: { $0.number == field[0] }) else { return nil }
                    out.append(.proto(proto))
                case .inetService:
                    out.append(.port(UInt16(field[0]) << 8 | UInt16(field[1])))
                }
            }
            index += width
        }
        return out
    }

    /// The prefix that spans exactly `first` … `last`, if there is one.
    private static func prefix(_ first: [UInt8], _ last: [UInt8]) -> CIDR? {
        let differing = zip(first, last).map { $0 ^ $1 }
        guard let leading = differing.firstIndex(where: { $0 != 0 }) else { return nil }
        let length = leading * 8 + differing[leading].leadingZeroBitCount
        guard let ip = IPAddress(bytes: first), let cidr = CIDR(address: ip, prefixLength: length),
              cidr.address.bytes == first, bytes(.prefix(cidr)).high == last else { return nil }
        return cidr
    }
}
