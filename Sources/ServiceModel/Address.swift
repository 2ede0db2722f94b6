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

/// An IPv4 or IPv6 address in network byte order.
public struct IPAddress: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let bytes: [UInt8]

    public var family: IPFamily { bytes.count == 4 ? .ipv4 : .ipv6 }

    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// Parses dotted-quad IPv4 (leading zeros read as decimal, as kube-proxy's ParseIPSloppy does)
    /// or IPv6 in any RFC 4291 text form, including an embedded IPv4 tail.
    public init?(_ text: String) {
        // Read as UTF-8 bytes: a state holds an address per endpoint, and `Character` iteration
        // made address parsing a fifth of the decode time.
        let parsed = text.utf8.withContiguousStorageIfAvailable { Self.parse($0[...]) } ?? Self.parse(Array(text.utf8)[...])
        guard let parsed else { return nil }
        bytes = parsed
    }

    /// The same, from UTF-8 bytes.
    init?(utf8 text: UnsafeBufferPointer<UInt8>) {
        guard let parsed = Self.parse(text[...]) else { return nil }
        bytes = parsed
    }

    private static func parse<Text: Collection<UInt8>>(_ text: Text) -> [UInt8]? where Text.SubSequence == Text {
        text.contains(UInt8(ascii: ":")) ? parseIPv6(text) : parseIPv4(text)
    }

    private static func isDigit(_ byte: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }

    /// Four dot-separated decimal parts of one to three digits, each at most 255.
    private static func parseIPv4<Text: Collection<UInt8>>(_ text: Text) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(4)
        var value = 0
        var digits = 0
        for byte in text {
            if byte == UInt8(ascii: ".") {
                guard digits > 0, out.count < 3 else { return nil }
                out.append(UInt8(value))
                value = 0
                digits = 0
            } else {
                guard isDigit(byte), digits < 3 else { return nil }
                value = value * 10 + Int(byte - UInt8(ascii: "0"))
                guard value <= 255 else { return nil }
                digits += 1
            }
        }
        guard digits > 0, out.count == 3 else { return nil }
        out.append(UInt8(value))
        return out
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
                    out += v4
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
        if bytes.count == 4 { return bytes.map(String.init).joined(separator: ".") }
        let words = stride(from: 0, to: 16, by: 2).map { UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]) }
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
        family == .ipv4 ? bytes[0] == 127 : bytes == [UInt8](repeating: 0, count: 15) + [1]
    }

    public var isUnspecified: Bool { bytes.allSatisfy { $0 == 0 } }

    public static func < (lhs: IPAddress, rhs: IPAddress) -> Bool {
        if lhs.bytes.count != rhs.bytes.count { return lhs.bytes.count < rhs.bytes.count }
        return lhs.bytes.lexicographicallyPrecedes(rhs.bytes)
    }
}

/// An address prefix such as `10.0.0.0/8`; the address is kept with its host bits cleared.
public struct CIDR: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let address: IPAddress
    public let prefixLength: Int

    public var family: IPFamily { address.family }

    public init?(address: IPAddress, prefixLength: Int) {
        guard (0...address.family.maxPrefixLength).contains(prefixLength) else { return nil }
        self.address = IPAddress(bytes: CIDR.mask(address.bytes, prefixLength))!
        self.prefixLength = prefixLength
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

    private static func mask(_ bytes: [UInt8], _ length: Int) -> [UInt8] {
        bytes.enumerated().map { index, byte in
            let bits = max(0, min(8, length - index * 8))
            return bits == 8 ? byte : byte & UInt8(truncatingIfNeeded: 0xff << (8 - bits))
        }
    }

    /// The netmask as bytes (for a bitwise match).
    public var maskBytes: [UInt8] { CIDR.mask([UInt8](repeating: 0xff, count: address.bytes.count), prefixLength) }

    public var isHost: Bool { prefixLength == family.maxPrefixLength }

    public func contains(_ ip: IPAddress) -> Bool {
        ip.family == family && CIDR.mask(ip.bytes, prefixLength) == address.bytes
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
