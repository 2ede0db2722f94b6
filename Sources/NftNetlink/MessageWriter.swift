internal import CNftables
import NftIR
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Writes nf_tables netlink messages straight into memory its owner provides (a request
/// buffer, a batch page): nlmsghdr, nfgenmsg, then attributes, nested ones too, each padded
/// to 4 bytes with zeros. No objects are built per message and nothing is copied afterwards,
/// so a batch of a million messages costs its bytes and no more.
///
/// Attributes are written in the order libnftnl 1.2.4 writes them for the same object, so the
/// bytes are nft's (`nft --debug=mnl`).
struct MessageWriter {
    private let base: UnsafeMutableRawPointer
    private let capacity: Int
    /// Bytes written from `base`, the current message included.
    private(set) var length = 0
    private var messageStart = 0
    /// Set when something did not fit; what was written since is garbage.
    private(set) var overflowed = false

    init(_ base: UnsafeMutableRawPointer, capacity: Int) {
        self.base = base
        self.capacity = capacity
    }

    /// Starts a message of nf_tables type `type` (NFNL_SUBSYS_NFTABLES is added) or, with
    /// `subsystem: false`, of raw nlmsg type `type` (batch begin and end).
    mutating func begin(type: UInt16, subsystem: Bool = true, flags: UInt16, seq: UInt32, family: UInt8, resourceID: UInt16 = 0) {
        messageStart = length
        guard reserve(MemoryLayout<nlmsghdr>.size + MemoryLayout<nfgenmsg>.size) else { return }
        let header = base + messageStart
        header.storeBytes(of: 0, as: UInt32.self)  // nlmsg_len, set by `end`
        header.storeBytes(of: subsystem ? UInt16(NFNL_SUBSYS_NFTABLES << 8) | type : type, toByteOffset: 4, as: UInt16.self)
        header.storeBytes(of: flags, toByteOffset: 6, as: UInt16.self)
        header.storeBytes(of: seq, toByteOffset: 8, as: UInt32.self)
        header.storeBytes(of: 0, toByteOffset: 12, as: UInt32.self)  // nlmsg_pid
        header.storeBytes(of: family, toByteOffset: 16, as: UInt8.self)
        header.storeBytes(of: UInt8(NFNETLINK_V0), toByteOffset: 17, as: UInt8.self)
        header.storeBytes(of: resourceID.bigEndian, toByteOffset: 18, as: UInt16.self)
    }

    /// Closes the current message (sets its nlmsg_len) and returns its length.
    @discardableResult
    mutating func end() -> Int {
        let messageLength = length - messageStart
        if !overflowed { (base + messageStart).storeBytes(of: UInt32(messageLength), as: UInt32.self) }
        return messageLength
    }

    /// Where the current message starts, to read it back or hand it on.
    var message: UnsafeMutableRawPointer { base + messageStart }

    /// Undoes everything written after `offset` (an earlier `length`).
    mutating func truncate(to offset: Int) {
        length = offset
    }

    /// Writes the header of an attribute whose value is `count` bytes, and the zeros that pad it
    /// to 4 bytes; returns where the value goes (nil when it does not fit: the message is then
    /// marked overflowed).
    private mutating func attribute(_ type: UInt16, count: Int) -> UnsafeMutableRawPointer? {
        let total = 4 + count
        let padded = (total + 3) & ~3
        guard total <= 0xffff, reserve(padded) else { overflowed = true; return nil }
        let attribute = base + length - padded
        attribute.storeBytes(of: UInt16(total), as: UInt16.self)
        attribute.storeBytes(of: type, toByteOffset: 2, as: UInt16.self)
        if padded > total { (attribute + total).initializeMemory(as: UInt8.self, repeating: 0, count: padded - total) }
        return attribute + 4
    }

    mutating func put(_ type: UInt16, bytes: UnsafeRawBufferPointer) {
        guard let value = attribute(type, count: bytes.count) else { return }
        if let source = bytes.baseAddress, bytes.count > 0 { value.copyMemory(from: source, byteCount: bytes.count) }
    }

    mutating func put(_ type: UInt16, bytes: [UInt8]) {
        bytes.withUnsafeBytes { put(type, bytes: $0) }
    }

    /// An attribute of `count` bytes that `fill` writes in place.
    mutating func put(_ type: UInt16, count: Int, fill: (UnsafeMutableRawBufferPointer) -> Void) {
        guard let value = attribute(type, count: count) else { return }
        fill(UnsafeMutableRawBufferPointer(start: value, count: count))
    }

    /// A NUL-terminated string (NLA_NUL_STRING), as mnl_attr_put_strz writes it.
    mutating func put(_ type: UInt16, string: String) {
        var string = string
        string.withUTF8 { putString(type, $0) }
    }

    mutating func put(_ type: UInt16, string: StaticString) {
        putString(type, UnsafeBufferPointer(start: string.utf8Start, count: string.utf8CodeUnitCount))
    }

    private mutating func putString(_ type: UInt16, _ utf8: UnsafeBufferPointer<UInt8>) {
        guard let value = attribute(type, count: utf8.count + 1) else { return }
        if let source = utf8.baseAddress, utf8.count > 0 { value.copyMemory(from: source, byteCount: utf8.count) }
        (value + utf8.count).storeBytes(of: 0, as: UInt8.self)
    }

    /// nftnl userdata holding one comment (`nftnl_udata_put_strz` of `comment` under `udataType`),
    /// as nft writes it for a rule or an element.
    mutating func put(_ type: UInt16, comment: Comment, udataType: UInt8) {
        var text = comment.text
        text.withUTF8 { utf8 in
            precondition(utf8.count + 1 <= 255, "a userdata value is at most 255 bytes")
            put(type, count: 2 + utf8.count + 1) { value in
                value[0] = udataType
                value[1] = UInt8(utf8.count + 1)
                if utf8.count > 0 { UnsafeMutableRawBufferPointer(rebasing: value[2...]).copyMemory(from: UnsafeRawBufferPointer(utf8)) }
                value[2 + utf8.count] = 0
            }
        }
    }

    /// A u32 in network order, as every nf_tables integer attribute is sent.
    mutating func put(_ type: UInt16, u32 value: UInt32) {
        withUnsafeBytes(of: value.bigEndian) { put(type, bytes: $0) }
    }

    mutating func put(_ type: UInt16, u64 value: UInt64) {
        withUnsafeBytes(of: value.bigEndian) { put(type, bytes: $0) }
    }

    mutating func put(_ type: UInt16, u8 value: UInt8) {
        withUnsafeBytes(of: value) { put(type, bytes: $0) }
    }

    /// Opens a nested attribute (NLA_F_NESTED set, as mnl_attr_nest_start does); returns where it
    /// starts, for `endNested`.
    mutating func beginNested(_ type: UInt16) -> Int {
        let start = length
        guard reserve(4) else { overflowed = true; return start }
        (base + start).storeBytes(of: UInt16(4), as: UInt16.self)
        (base + start).storeBytes(of: type | UInt16(NLA_F_NESTED), toByteOffset: 2, as: UInt16.self)
        return start
    }

    /// Closes the nested attribute opened at `start`. One that outgrew the 16-bit length marks
    /// the message overflowed, as an attribute that does not fit does.
    mutating func endNested(_ start: Int) {
        let nestedLength = length - start
        guard !overflowed else { return }
        guard nestedLength <= 0xffff else { overflowed = true; return }
        (base + start).storeBytes(of: UInt16(nestedLength), as: UInt16.self)
    }

    /// A data nest (`type` → NFTA_DATA_VALUE → the bytes), as keys, element data and immediates hold.
    mutating func putData(_ type: UInt16, value: RegisterValue) {
        let nest = beginNested(type)
        value.withUnsafeBytes { put(A.dataValue, bytes: $0) }
        endNested(nest)
    }

    /// A data nest of `count` bytes that `fill` writes in place.
    mutating func putData(_ type: UInt16, count: Int, fill: (UnsafeMutableRawBufferPointer) -> Void) {
        let nest = beginNested(type)
        put(A.dataValue, count: count, fill: fill)
        endNested(nest)
    }

    /// A verdict nest (`type` → NFTA_DATA_VERDICT → code and, for jump and goto, the chain).
    mutating func putVerdict(_ type: UInt16, code: Int32, chain: Name?) {
        let outer = beginNested(type)
        let verdict = beginNested(A.dataVerdict)
        put(A.verdictCode, u32: UInt32(bitPattern: code))
        if let chain { put(A.verdictChain, string: chain.rawValue) }
        endNested(verdict)
        endNested(outer)
    }

    /// The bytes a nested attribute opened at `start` would have now.
    func nestedLength(_ start: Int) -> Int { length - start }

    private mutating func reserve(_ count: Int) -> Bool {
        guard !overflowed, length + count <= capacity else {
            overflowed = true
            return false
        }
        length += count
        return true
    }
}
