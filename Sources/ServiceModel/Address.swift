/// IP addresses and prefixes, parsed and printed without libc so the model stays pure.

/// An address family as Kubernetes spells it (`spec.ipFamilies`, EndpointSlice `addressType`).
public enum IPFamily: String, Sendable, Hashable, CaseIterable, Comparable, CustomStringConvertible {
    case ipv4 = "IPv4"
    case ipv6 = "IPv6"

    public var description: String { rawValue }
    public var addressLength: Int { self == .ipv4 ? 4 : 16 }
    public var maxPrefixLength: Int { addressLength * 8 }

    public static func < (lhs: IPFamily, rhs: IPFamily) -> Bool { lhs == .ipv4 && rhs == .ipv6 }
}

/// An IPv4 or IPv6 address, held inline as a 128-bit big-endian number: a state has an
/// address per endpoint and the IR copies each into keys, rules and sets, so an address is a
/// plain value (no heap array, no reference count) that copies, hashes and compares as integers.
public struct IPAddress: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Bytes 0–7 of an IPv6 address, most significant first; 0 for IPv4.
    public let high: UInt64
    /// Bytes 8–15 of an IPv6 address; an IPv4 address in the low 32 bits.
    public let low: UInt64
    public let family: IPFamily

    /// The address bytes in network order (4 or 16).
    public var bytes: [UInt8] {
        switch family {
        case .ipv4: return withUnsafeBytes(of: UInt32(truncatingIfNeeded: low).bigEndian) { Array($0) }
        case .ipv6: return withUnsafeBytes(of: (high.bigEndian, low.bigEndian)) { Array($0) }
        }
    }

    /// The IPv4 address as a number (`10.0.0.1` is 0x0a000001); meaningless for IPv6.
    public var ipv4Value: UInt32 { UInt32(truncatingIfNeeded: low) }

    public init?(bytes: [UInt8]) {
        switch bytes.count {
        case 4:
            self.init(ipv4: UInt32(bytes[0]) << 24 | UInt32(bytes[1]) << 16 | UInt32(bytes[2]) << 8 | UInt32(bytes[3]))
        case 16:
            var high: UInt64 = 0, low: UInt64 = 0
            for index in 0..<8 {
                high = high << 8 | UInt64(bytes[index])
                low = low << 8 | UInt64(bytes[8 + index])
            }
            self.init(ipv6High: high, low: low)
        default:
            return nil
        }
    }

    public init(ipv4 value: UInt32) {
        high = 0
        low = UInt64(value)
        family = .ipv4
    }

    public init(ipv6High high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
        family = .ipv6
    }

    /// Parses dotted-quad IPv4 (leading zeros read as decimal, as kube-proxy's ParseIPSloppy does)
    /// or IPv6 in any RFC 4291 text form, including an embedded IPv4 tail.
    public init?(_ text: String) {
        // Read as UTF-8 bytes: a state holds an address per endpoint, and `Character` iteration
        // made address parsing a fifth of the decode time.
        let parsed = text.utf8.withContiguousStorageIfAvailable { Self.parse($0[...]) } ?? Self.parse(Array(text.utf8)[...])
        guard let parsed else { return nil }
        self = parsed
    }

    /// The same, from UTF-8 bytes.
    init?(utf8 text: UnsafeBufferPointer<UInt8>) {
        guard let parsed = Self.parse(text[...]) else { return nil }
        self = parsed
    }

    private static func parse<Text: Collection<UInt8>>(_ text: Text) -> IPAddress? where Text.SubSequence == Text {
        if text.contains(UInt8(ascii: ":")) { return parseIPv6(text).flatMap { IPAddress(bytes: $0) } }
        return parseIPv4(text).map { IPAddress(ipv4: $0) }
    }

    private static func isDigit(_ byte: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }

    /// Four dot-separated decimal parts of one to three digits, each at most 255.
    private static func parseIPv4<Text: Collection<UInt8>>(_ text: Text) -> UInt32? {
        var out: UInt32 = 0
        var parts = 0
        var value = 0
        var digits = 0
        for byte in text {
            if byte == UInt8(ascii: ".") {
                guard digits > 0, parts < 3 else { return nil }
                out = out << 8 | UInt32(value)
                parts += 1
                value = 0
                digits = 0
            } else {
                guard isDigit(byte), digits < 3 else { return nil }
                value = value * 10 + Int(byte - UInt8(ascii: "0"))
                guard value <= 255 else { return nil }
                digits += 1
            }
        }
        guard digits > 0, parts == 3 else { return nil }
        return out << 8 | UInt32(value)
    }

    private static func parseIPv6<Text: Collection<UInt8>>(_ text: Text) -> [UInt8]? where Text.SubSequence == Text {
        func isHexDigit(_ byte: UInt8) -> Bool { isDigit(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte | 0x20) }
        let colon = UInt8(ascii: ":")
        guard !text.isEmpty, text.allSatisfy({ isHexDigit($0) || $0 == colon || $0 == UInt8(ascii: ".") }) else { return nil }
        // At most one `::`, the run of zero groups.
        var halves = [text]
        if let double = text.indices.first(where: { text[$0] == colon && text[text.index(after: $0)...].first == colon }) {
            let rest = text[text.index(double, offsetBy: 2)...]
            if rest.indices.contains(where: { rest[$0] == colon && rest[rest.index(after: $0)...].first == colon }) { return nil }
            halves = [text[..<double], rest]
        }
        func groups(_ part: Text, allowTail: Bool) -> [UInt8]? {
            if part.isEmpty { return [] }
            var out: [UInt8] = []
            let fields = part.split(separator: colon, omittingEmptySubsequences: false)
            for (index, field) in fields.enumerated() {
                if field.contains(UInt8(ascii: ".")) {
                    guard allowTail, index == fields.count - 1, let v4 = parseIPv4(field) else { return nil }
                    out += [UInt8(v4 >> 24), UInt8(v4 >> 16 & 0xff), UInt8(v4 >> 8 & 0xff), UInt8(v4 & 0xff)]
                } else {
                    guard (1...4).contains(field.count) else { return nil }
                    let value = field.reduce(0) { $0 << 4 | UInt16(isDigit($1) ? $1 - UInt8(ascii: "0") : ($1 | 0x20) - UInt8(ascii: "a") + 10) }
                    out += [UInt8(value >> 8), UInt8(value & 0xff)]
                }
            }
            return out
        }
        if halves.count == 1 {
            guard let all = groups(halves[0], allowTail: true), all.count == 16 else { return nil }
            return all
        }
        guard let head = groups(halves[0], allowTail: false),
              let tail = groups(halves[1], allowTail: true),
              head.count + tail.count <= 14 else { return nil }
        return head + [UInt8](repeating: 0, count: 16 - head.count - tail.count) + tail
    }

    /// Canonical text: dotted quad, or RFC 5952 IPv6 (lowercase, longest zero run compressed).
    public var description: String {
        if family == .ipv4 {
            let value = ipv4Value
            return "\(value >> 24).\(value >> 16 & 0xff).\(value >> 8 & 0xff).\(value & 0xff)"
        }
        let words = (0..<8).map { UInt16(truncatingIfNeeded: ($0 < 4 ? high : low) >> (48 - 16 * ($0 % 4))) }
        var bestStart = -1, bestLength = 0, index = 0
        while index < 8 {
            if words[index] == 0 {
                var end = index
                while end < 8 && words[end] == 0 { end += 1 }
                if end - index > bestLength && end - index >= 2 { bestStart = index; bestLength = end - index }
                index = end
            } else {
                index += 1
            }
        }
        func hex(_ range: Range<Int>) -> String { words[range].map { String($0, radix: 16) }.joined(separator: ":") }
        if bestStart < 0 { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
    }

    public var isLoopback: Bool {
        family == .ipv4 ? ipv4Value >> 24 == 127 : high == 0 && low == 1
    }

    public var isUnspecified: Bool { high == 0 && low == 0 }

    /// The address with only the bits set in `mask` (an address of the same family) kept.
    public func masked(by mask: IPAddress) -> IPAddress {
        family == .ipv4 ? IPAddress(ipv4: ipv4Value & mask.ipv4Value) : IPAddress(ipv6High: high & mask.high, low: low & mask.low)
    }

    /// IPv4 before IPv6, then by value (byte by byte).
    public static func < (lhs: IPAddress, rhs: IPAddress) -> Bool {
        if lhs.family != rhs.family { return lhs.family == .ipv4 }
        return lhs.high != rhs.high ? lhs.high < rhs.high : lhs.low < rhs.low
    }
}

/// An address prefix such as `10.0.0.0/8`; the address is kept with its host bits cleared.
public struct CIDR: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let address: IPAddress
    private let length: UInt8

    public var prefixLength: Int { Int(length) }
    public var family: IPFamily { address.family }

    public init?(address: IPAddress, prefixLength: Int) {
        guard (0...address.family.maxPrefixLength).contains(prefixLength) else { return nil }
        self.address = CIDR.mask(address, prefixLength)
        length = UInt8(prefixLength)
    }

    /// Parses `addr/len`; a bare address is a host prefix. Surrounding whitespace is tolerated
    /// (kube-proxy trims `loadBalancerSourceRanges`).
    public init?(_ text: String) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let parts = trimmed.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = IPAddress(String(parts[0])) else { return nil }
        var length = address.family.maxPrefixLength
        if parts.count == 2 {
            guard !parts[1].isEmpty, parts[1].count <= 3, parts[1].allSatisfy({ $0.isASCII && $0.isNumber }),
                  let value = Int(parts[1]) else { return nil }
            length = value
        }
        self.init(address: address, prefixLength: length)
    }

    /// The netmask of `length` bits, as an address of `family` (shifts past the width give 0).
    private static func netmask(_ family: IPFamily, _ length: Int) -> IPAddress {
        switch family {
        case .ipv4:
            return IPAddress(ipv4: length == 0 ? 0 : UInt32.max << UInt32(32 - length))
        case .ipv6:
            let high: UInt64 = length >= 64 ? .max : length == 0 ? 0 : UInt64.max << UInt64(64 - length)
            let low: UInt64 = length <= 64 ? 0 : length == 128 ? .max : UInt64.max << UInt64(128 - length)
            return IPAddress(ipv6High: high, low: low)
        }
    }

    private static func mask(_ address: IPAddress, _ length: Int) -> IPAddress {
        let mask = netmask(address.family, length)
        switch address.family {
        case .ipv4: return IPAddress(ipv4: address.ipv4Value & mask.ipv4Value)
        case .ipv6: return IPAddress(ipv6High: address.high & mask.high, low: address.low & mask.low)
        }
    }

    /// The netmask as bytes (for a bitwise match).
    public var maskBytes: [UInt8] { CIDR.netmask(family, prefixLength).bytes }

    public var isHost: Bool { prefixLength == family.maxPrefixLength }

    public func contains(_ ip: IPAddress) -> Bool {
        ip.family == family && CIDR.mask(ip, prefixLength) == address
    }

    public var description: String { "\(address)/\(prefixLength)" }

    public static func < (lhs: CIDR, rhs: CIDR) -> Bool {
        lhs.address != rhs.address ? lhs.address < rhs.address : lhs.prefixLength < rhs.prefixLength
    }
}

private extension String {
    func trimmingCharacters(in _: WhitespaceSet) -> String {
        var slice = Substring(self)
        while let first = slice.first, first.isWhitespace { slice.removeFirst() }
        while let last = slice.last, last.isWhitespace { slice.removeLast() }
        return String(slice)
    }
}

private enum WhitespaceSet { case whitespaces }
