internal import CNftables
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Netlink attributes (struct nlattr: u16 length, u16 type, the value padded to 4 bytes), read in
/// place from a received datagram. Dumps are decoded straight from these, without copying each
/// object into a libnftnl one first: a read-back meets over a million of them.
///
/// A malformed attribute ends the sequence; what it held is then missing, and the caller's
/// check for that attribute reports it.
struct Attributes: Sequence, IteratorProtocol {
    private var cursor: UnsafeRawPointer?
    private var remaining: Int

    init(_ bytes: UnsafeRawBufferPointer) {
        cursor = bytes.baseAddress
        remaining = bytes.count
    }

    /// The attributes of an nf_tables message: what follows its nlmsghdr and struct nfgenmsg.
    init(message: UnsafePointer<nlmsghdr>) {
        let offset = MemoryLayout<nlmsghdr>.size + MemoryLayout<nfgenmsg>.size
        let length = Int(message.pointee.nlmsg_len)
        self.init(UnsafeRawBufferPointer(start: UnsafeRawPointer(message) + offset, count: Swift.max(0, length - offset)))
    }

    mutating func next() -> Attribute? {
        guard let start = cursor, remaining >= 4 else { return nil }
        let length = Int(start.loadUnaligned(as: UInt16.self))
        guard length >= 4, length <= remaining else {
            remaining = 0
            return nil
        }
        let type = start.loadUnaligned(fromByteOffset: 2, as: UInt16.self) & 0x3fff  // NLA_TYPE_MASK
        let padded = Swift.min((length + 3) & ~3, remaining)
        cursor = start + padded
        remaining -= padded
        return Attribute(type: type, value: UnsafeRawBufferPointer(start: start + 4, count: length - 4))
    }
}

/// One attribute; its value points into the received datagram.
struct Attribute {
    let type: UInt16
    let value: UnsafeRawBufferPointer

    /// A big-endian u32 (every nf_tables integer is sent in network order); 0 when too short.
    var u32: UInt32 { value.count >= 4 ? UInt32(bigEndian: value.loadUnaligned(as: UInt32.self)) : 0 }
    var u64: UInt64 { value.count >= 8 ? UInt64(bigEndian: value.loadUnaligned(as: UInt64.self)) : 0 }
    var u8: UInt8 { value.first ?? 0 }
    var nested: Attributes { Attributes(value) }

    /// A NUL-terminated string's bytes, without the NUL.
    var text: UnsafeRawBufferPointer {
        var count = value.count
        while count > 0 && value[count - 1] == 0 { count -= 1 }
        return UnsafeRawBufferPointer(rebasing: value[0..<count])
    }

    var string: String { String(decoding: text, as: UTF8.self) }

    /// Whether this string attribute holds exactly `string`.
    func holds(_ string: String) -> Bool {
        let text = self.text
        var string = string
        return string.withUTF8 { utf8 in
            utf8.count == text.count && (utf8.isEmpty || memcmp(utf8.baseAddress!, text.baseAddress!, utf8.count) == 0)
        }
    }

    /// The NFTA_DATA_VALUE bytes inside an nft_data attribute (cmp data, a set key …).
    var dataValue: UnsafeRawBufferPointer? {
        for inner in nested where inner.type == UInt16(NFTA_DATA_VALUE.rawValue) { return inner.value }
        return nil
    }

    /// The NFTA_DATA_VERDICT inside an nft_data attribute: its code and, for a jump or goto, the chain.
    var dataVerdict: (code: Int32, chain: Attribute?)? {
        for inner in nested where inner.type == UInt16(NFTA_DATA_VERDICT.rawValue) {
            var code: Int32?
            var chain: Attribute?
            for field in inner.nested {
                switch Int(field.type) {
                case Int(NFTA_VERDICT_CODE.rawValue): code = Int32(bitPattern: field.u32)
                case Int(NFTA_VERDICT_CHAIN.rawValue): chain = field
                default: break
                }
            }
            return code.map { ($0, chain) }
        }
        return nil
    }
}

/// Values decoded from byte strings that repeat throughout a dump (chain and set names, comments),
/// each decoded once: a dump of a million rules names a few hundred thousand distinct strings at
/// most, and building a `String` and checking a `Name` costs more than hashing the bytes.
struct Interner<Value> {
    private struct Entry {
        var start: Int
        var count: Int
        var hash: UInt64
        var value: Value
    }

    private var storage: [UInt8] = []
    private var entries: [Entry] = []
    /// Open addressing over `entries` (index + 1; 0 = empty); the count is a power of two.
    private var slots = [Int32](repeating: 0, count: 1024)

    /// The value for `bytes`, made by `make` the first time they are seen.
    mutating func value(for bytes: UnsafeRawBufferPointer, make: (UnsafeRawBufferPointer) -> Value) -> Value {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        let mask = slots.count - 1
        var slot = Int(truncatingIfNeeded: hash) & mask
        while slots[slot] != 0 {
            let entry = entries[Int(slots[slot]) - 1]
            if entry.hash == hash && entry.count == bytes.count && matches(entry, bytes) { return entry.value }
            slot = (slot + 1) & mask
        }
        let value = make(bytes)
        entries.append(Entry(start: storage.count, count: bytes.count, hash: hash, value: value))
        storage.append(contentsOf: bytes)
        slots[slot] = Int32(entries.count)
        if entries.count * 2 > slots.count { grow() }
        return value
    }

    private func matches(_ entry: Entry, _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard entry.count > 0 else { return true }
        return storage.withUnsafeBytes { memcmp($0.baseAddress! + entry.start, bytes.baseAddress!, entry.count) == 0 }
    }

    private mutating func grow() {
        slots = [Int32](repeating: 0, count: slots.count * 2)
        let mask = slots.count - 1
        for (index, entry) in entries.enumerated() {
            var slot = Int(truncatingIfNeeded: entry.hash) & mask
            while slots[slot] != 0 { slot = (slot + 1) & mask }
            slots[slot] = Int32(index + 1)
        }
    }
}
