import ServiceModel

/// UTF-8 text built in one growing allocation. A 10k-service ruleset is about 10 MB of text;
/// writing every word, number and address in place avoids a String (and its allocation) per
/// statement, element and address, and owning the memory (rather than an `[UInt8]`) avoids a
/// uniqueness check and a call per append. Noncopyable, so the memory has exactly one owner.
struct TextBuffer: ~Copyable {
    private var start: UnsafeMutablePointer<UInt8>
    private var count = 0
    private var capacity: Int

    init(capacity: Int = 256) {
        self.capacity = max(capacity, 16)
        start = .allocate(capacity: self.capacity)
    }

    deinit { start.deallocate() }

    /// The text so far. Everything appended is valid UTF-8 (literals, `String`s, ASCII digits),
    /// so decoding never substitutes a replacement character.
    var string: String { String(decoding: UnsafeBufferPointer(start: start, count: count), as: UTF8.self) }

    @inline(__always)
    mutating func append(_ text: StaticString) {
        // `withUTF8Buffer`, not `utf8Start`: a one-character literal may be stored as a scalar.
        text.withUTF8Buffer { append($0) }
    }

    mutating func append(string text: String) {
        if text.utf8.withContiguousStorageIfAvailable({ append($0) }) == nil {
            for byte in text.utf8 { append(ascii: byte) }
        }
    }

    @inline(__always)
    mutating func append(ascii byte: UInt8) {
        room(for: 1)[0] = byte
        count += 1
    }

    /// Base 10, with a `-` when negative.
    mutating func append(decimal value: Int) {
        if value < 0 { append(ascii: UInt8(ascii: "-")) }
        count += TextBuffer.write(decimal: value.magnitude, at: room(for: 20))
    }

    /// Lowercase base 16, no prefix, zero-padded to at least `minimumDigits` (at most 8).
    mutating func append(hex value: UInt32, minimumDigits: Int = 1) {
        var digits = minimumDigits
        while digits < 8 && value >> (4 * digits) != 0 { digits += 1 }
        let end = room(for: digits) + digits
        var rest = value
        for offset in 1...digits {
            let digit = UInt8(truncatingIfNeeded: rest & 0xf)
            end[-offset] = digit < 10 ? UInt8(ascii: "0") + digit : UInt8(ascii: "a") - 10 + digit
            rest >>= 4
        }
        count += digits
    }

    /// A dotted quad, or RFC 5952 IPv6 text: lowercase, no leading zeros in a group, the longest
    /// run of two or more zero groups (the first of equal runs) written `::`. The same text as
    /// `IPAddress.description`, without building a String per group.
    mutating func append(_ address: IPAddress) {
        switch address.family {
        case .ipv4: appendIPv4(address.ipv4Value)
        case .ipv6: appendIPv6(high: address.high, low: address.low)
        }
    }

    private mutating func appendIPv4(_ address: UInt32) {
        // at most 15 bytes: one check for room, not one per octet
        let text = room(for: 15)
        var written = TextBuffer.write(decimal: UInt(address >> 24), at: text)
        for shift in stride(from: 16 as UInt32, through: 0, by: -8) {
            text[written] = UInt8(ascii: ".")
            written += 1 + TextBuffer.write(decimal: UInt(address >> shift & 0xff), at: text + written + 1)
        }
        count += written
    }

    /// `high` holds groups 0–3, `low` groups 4–7, each big-endian.
    private mutating func appendIPv6(high: UInt64, low: UInt64) {
        func group(_ index: Int) -> UInt32 { UInt32(truncatingIfNeeded: (index < 4 ? high : low) >> (48 - 16 * (index % 4))) & 0xffff }
        var runStart = 8, runLength = 1, index = 0
        while index < 8 {
            guard group(index) == 0 else { index += 1; continue }
            var end = index + 1
            while end < 8 && group(end) == 0 { end += 1 }
            if end - index > runLength { runStart = index; runLength = end - index }
            index = end
        }
        for index in 0..<8 {
            if index == runStart {
                // the run's `::`: its first colon ends the group before, if there is one
                if index == 0 { append(ascii: UInt8(ascii: ":")) }
                append(ascii: UInt8(ascii: ":"))
                continue
            }
            if index > runStart && index < runStart + runLength { continue }
            append(hex: group(index))
            if index < 7 { append(ascii: UInt8(ascii: ":")) }
        }
    }

    /// `10.0.0.0/8`, `fd00::/64`.
    mutating func append(_ prefix: CIDR) {
        append(prefix.address)
        append(ascii: UInt8(ascii: "/"))
        append(decimal: prefix.prefixLength)
    }

    /// Writes `value` in base 10 at `text` (which has room for its up to 20 digits); returns
    /// how many digits it wrote.
    private static func write(decimal value: UInt, at text: UnsafeMutablePointer<UInt8>) -> Int {
        var digits = 1
        var bound: UInt = 10
        // (`bound` wraps past 10^19, but only once `digits` is 20, the most a UInt has)
        while digits < 20 && value >= bound {
            digits += 1
            bound &*= 10
        }
        var rest = value
        for offset in stride(from: digits - 1, through: 0, by: -1) {
            text[offset] = UInt8(ascii: "0") + UInt8(truncatingIfNeeded: rest % 10)
            rest /= 10
        }
        return digits
    }

    @inline(__always)
    private mutating func append(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard let source = bytes.baseAddress else { return }
        room(for: bytes.count).initialize(from: source, count: bytes.count)
        count += bytes.count
    }

    /// Where the next `needed` bytes go; the caller adds what it wrote to `count`.
    @inline(__always)
    private mutating func room(for needed: Int) -> UnsafeMutablePointer<UInt8> {
        if count + needed > capacity { grow(toHold: needed) }
        return start + count
    }

    /// Rare in a script or block (their first allocation is sized for the whole text), so kept
    /// out of every append.
    ///
    /// `releasenone` promises the optimizer what the body shows: it frees only raw bytes, never
    /// an object. Without it, every append might release anything, so each rule, element and
    /// address read from the IR was retained (and released) around the appends that render it,
    /// which was half the time of a large render. Keep this function free of object releases.
    @inline(never) @_effects(releasenone)
    private mutating func grow(toHold needed: Int) {
        let grown = max(2 * capacity, count + needed)
        let moved = UnsafeMutablePointer<UInt8>.allocate(capacity: grown)
        moved.moveInitialize(from: start, count: count)
        start.deallocate()
        start = moved
        capacity = grown
    }
}
