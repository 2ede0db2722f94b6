/// JSON text read straight from its UTF-8 bytes into the `YAMLTree` that Yams' nodes convert to.
///
/// JSON is YAML's flow style, so the YAML reader handles it too, but through libyaml's event stream
/// and Yams' node graph: seconds for a 20 MB `kind: List`. The trees here are the ones Yams gives
/// for the same text, so the decoders cannot tell the two readers apart: strings are quoted scalars;
/// numbers, `true`, `false` and `null` are plain scalars spelled as written; a repeated key is an
/// error, as Yams makes it.
///
/// Two deliberate differences, both where YAML misreads JSON: a `\uD83D\uDE00` surrogate pair is
/// one character (libyaml refuses the text), and a raw U+0085, U+2028 or U+2029 in a string stays
/// as it is (YAML folds it into a space like a line break).
enum JSONReader {
    /// Values nested deeper than this are an error. libyaml stops at 1000 levels; Kubernetes
    /// objects stay within a few dozen, and the recursion must fit a small thread stack.
    static let maxDepth = 512

    /// What `text` holds when it is JSON: each top-level value in order, or the syntax error that
    /// ended one. Nil when the text is not JSON: its first value does not parse, or something other
    /// than another value follows it (a `---`, a comment). Such text is left to the YAML reader,
    /// whose messages are the ones users know, and which reads YAML flow style (`{kind: List}`).
    ///
    /// After a broken value, reading resumes at the next line starting with `{` or `[`: the next
    /// value of a stream written one per line, or pretty-printed values one after the other.
    static func read(_ text: String) -> [Result<YAMLValue, JSONSyntaxError>]? {
        var text = text
        let read = text.withUTF8 { bytes -> (documents: [Result<Int, JSONSyntaxError>], builder: YAMLTreeBuilder)? in
            // Offsets are `UInt32`, and unescaped strings may take as many bytes again.
            guard bytes.count <= YAMLTree.maxSize / 2 else { return nil }
            var scanner = JSONScanner(bytes)
            return scanner.documents().map { ($0, scanner.builder) }
        }
        guard let read else { return nil }
        let tree = read.builder.tree()
        return read.documents.map { $0.map { YAMLValue(tree: tree, index: $0) } }
    }

    /// Whether `text` should be tried as JSON: its first byte after whitespace (and a byte-order
    /// mark) opens an object or an array. A YAML document cannot start with either unless it is in
    /// flow style, which `read` hands back.
    static func looksLikeJSON(_ text: String) -> Bool {
        var bytes = text.utf8[...]
        if bytes.starts(with: byteOrderMark) { bytes = bytes.dropFirst(byteOrderMark.count) }
        let first = bytes.first { !JSONScanner.isWhitespace($0) }
        return first == UInt8(ascii: "{") || first == UInt8(ascii: "[")
    }

    fileprivate static let byteOrderMark: [UInt8] = [0xEF, 0xBB, 0xBF]
}

/// A JSON syntax error, placed as libyaml places its errors: line and column from 1, the column
/// counted in Unicode scalars.
struct JSONSyntaxError: Error, Equatable, CustomStringConvertible {
    var line: Int
    var column: Int
    var problem: String

    var description: String { "line \(line), column \(column): \(problem)" }
}

/// A recursive-descent reader over one text's bytes.
private struct JSONScanner {
    let bytes: UnsafeBufferPointer<UInt8>
    var builder: YAMLTreeBuilder
    var position = 0
    var depth = 0
    /// How far lines have been counted for messages: errors come in text order.
    private var counted = (offset: 0, line: 1, lineStart: 0)

    init(_ bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
        // The tree keeps a copy of the text: strings without escapes are read there. Strings
        // with escapes are appended unescaped; a little room keeps a few from copying it all again.
        let copy = RawStorage<UInt8>(capacity: bytes.count + 4096)
        copy.append(contentsOf: bytes)
        // About one node per eight bytes of typical Kubernetes JSON; reserving spares regrowing.
        builder = YAMLTreeBuilder(bytes: copy, expectedNodes: bytes.count / 8)
        if bytes.starts(with: JSONReader.byteOrderMark) { position = JSONReader.byteOrderMark.count }
    }

    /// Where reading stopped, with its byte offset; placed in lines and columns only when reported.
    struct Failure: Error {
        var offset: Int
        var problem: String
    }

    static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09
    }

    /// Each top-level value's root node, or its error.
    mutating func documents() -> [Result<Int, JSONSyntaxError>]? {
        var documents: [Result<Int, JSONSyntaxError>] = []
        while true {
            skipWhitespace()
            guard position < bytes.count else { return documents }
            let start = position
            let byte = bytes[position]
            guard byte == UInt8(ascii: "{") || byte == UInt8(ascii: "[") else {
                // After one value, anything else (`---`, `#`, `...`) makes it a YAML stream.
                if documents.count < 2 { return nil }
                documents.append(.failure(locate(fail("expected '{' or '[' to start the next value, found \(found)"))))
                resume(from: start + 1)
                continue
            }
            let root = builder.nodeCount
            do throws(Failure) {
                try value()
                documents.append(.success(root))
            } catch {
                if documents.isEmpty { return nil }
                builder.truncate(to: root)
                documents.append(.failure(locate(error)))
                resume(from: max(error.offset, start + 1))
            }
        }
    }

    /// Moves to the first line start at or after `offset` where `{` or `[` stands, or to the end.
    private mutating func resume(from offset: Int) {
        position = offset
        while position < bytes.count {
            let lineStart = position == 0 || bytes[position - 1] == 0x0A
            if lineStart && (bytes[position] == UInt8(ascii: "{") || bytes[position] == UInt8(ascii: "[")) { return }
            position += 1
        }
    }

    private mutating func locate(_ failure: Failure) -> JSONSyntaxError {
        let end = min(failure.offset, bytes.count)
        for offset in counted.offset..<end where bytes[offset] == 0x0A {
            counted.line += 1
            counted.lineStart = offset + 1
        }
        counted.offset = end
        // Continuation bytes (10xxxxxx) do not start a scalar.
        let scalars = bytes[counted.lineStart..<end].count { $0 & 0xC0 != 0x80 }
        return JSONSyntaxError(line: counted.line, column: scalars + 1, problem: failure.problem)
    }

    private mutating func skipWhitespace() {
        while position < bytes.count && Self.isWhitespace(bytes[position]) { position += 1 }
    }

    private func fail(_ problem: String, at offset: Int? = nil) -> Failure {
        Failure(offset: offset ?? position, problem: problem)
    }

    /// A short spelling of the byte at the current position for a message.
    private var found: String {
        guard position < bytes.count else { return "the end of the text" }
        let byte = bytes[position]
        return (0x21..<0x7F).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16))"
    }

    /// Appends one value's nodes.
    private mutating func value() throws(Failure) {
        skipWhitespace()
        guard position < bytes.count else { throw fail("expected a value, found the end of the text") }
        switch bytes[position] {
        case UInt8(ascii: "{"): try object()
        case UInt8(ascii: "["): try array()
        case UInt8(ascii: "\""): try string()
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): try number()
        default: throw fail("expected a value, found \(found)")
        }
    }

    private mutating func enter() throws(Failure) {
        depth += 1
        if depth > JSONReader.maxDepth { throw fail("values nested deeper than \(JSONReader.maxDepth) levels") }
    }

    private mutating func object() throws(Failure) {
        try enter()
        defer { depth -= 1 }
        position += 1  // {
        let node = builder.open()
        var count = 0
        var keys: Set<String>?  // once the object is large
        var signature = KeySignature()
        skipWhitespace()
        if position < bytes.count && bytes[position] == UInt8(ascii: "}") {
            position += 1
            builder.closeMap(node, count: 0)
            return
        }
        while true {
            skipWhitespace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else {
                throw fail("expected a string key, found \(found)")
            }
            let keyStart = position
            try string()
            if signature.mayRepeat(builder.nodes[builder.nodeCount - 1], in: builder.bytes)
                && repeatsLastKey(of: node, entries: count, keys: &keys) {
                throw fail("duplicate key \(quoted(scalarText(builder.nodeCount - 1)))", at: keyStart)
            }
            skipWhitespace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else {
                throw fail("expected ':' after a key, found \(found)")
            }
            position += 1
            try value()
            count += 1
            skipWhitespace()
            guard position < bytes.count else { throw fail("expected ',' or '}', found the end of the text") }
            switch bytes[position] {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "}"): position += 1; builder.closeMap(node, count: count); return
            default: throw fail("expected ',' or '}', found \(found)")
            }
        }
    }

    private mutating func array() throws(Failure) {
        try enter()
        defer { depth -= 1 }
        position += 1  // [
        let node = builder.open()
        var count = 0
        skipWhitespace()
        if position < bytes.count && bytes[position] == UInt8(ascii: "]") {
            position += 1
            builder.closeList(node, count: 0)
            return
        }
        while true {
            try value()
            count += 1
            skipWhitespace()
            guard position < bytes.count else { throw fail("expected ',' or ']', found the end of the text") }
            switch bytes[position] {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "]"): position += 1; builder.closeList(node, count: count); return
            default: throw fail("expected ',' or ']', found \(found)")
            }
        }
    }

    private mutating func literal(_ word: StaticString) throws(Failure) {
        let length = word.utf8CodeUnitCount
        let matches = position + length <= bytes.count && word.withUTF8Buffer { word in
            (0..<length).allSatisfy { bytes[position + $0] == word[$0] }
        }
        guard matches else { throw fail("expected a value, found \(found)") }
        builder.scalar(position..<position + length, quoted: false, ascii: true)
        position += length
    }

    /// A cheap first look for repeated keys, since nearly every object has none: ASCII keys that
    /// differ in length or first byte differ. Non-ASCII keys (canonical equivalence) and large
    /// objects (whose keys `repeatsLastKey` keeps in a set) always get the full check.
    private struct KeySignature {
        private var seen: UInt64 = 0  // a bit per earlier key
        private var keys = 0
        private var allASCII = true

        mutating func mayRepeat(_ key: YAMLTree.Node, in bytes: RawStorage<UInt8>) -> Bool {
            keys += 1
            guard case .scalar(let offset, let length, _, let ascii) = key else { return true }
            allASCII = allASCII && ascii
            let first = length == 0 ? 0 : bytes[Int(offset)]
            let bit: UInt64 = 1 << ((UInt64(length) &* 31 &+ UInt64(first)) & 63)
            defer { seen |= bit }
            return !allASCII || keys > 8 || seen & bit != 0
        }
    }

    /// Whether the key just read repeats one of the `entries` before it in the object at `node`,
    /// which Yams refuses. Keys compare as Swift strings do (canonically equivalent spellings are
    /// one key), as in Yams. A small object's keys are compared where they stand; from a few keys
    /// on, a set of them keeps a huge object linear.
    private func repeatsLastKey(of node: Int, entries: Int, keys: inout Set<String>?) -> Bool {
        let key = builder.nodeCount - 1
        if keys == nil && entries >= 8 {
            var earlier = Set<String>()
            var child = node + 1
            for _ in 0..<entries {
                earlier.insert(scalarText(child))
                child = builder.after(child + 1)
            }
            keys = earlier
        }
        if let inserted = keys?.insert(scalarText(key)).inserted { return !inserted }
        let nodes = builder.nodes.buffer, bytes = builder.bytes.buffer
        guard case .scalar(let offset, let length, _, let ascii) = nodes[key] else { return false }
        let keyBytes = UnsafeBufferPointer(rebasing: bytes[Int(offset)..<Int(offset) + Int(length)])
        var child = node + 1
        for _ in 0..<entries {
            if case .scalar(let offset, let length, _, let earlierIsASCII) = nodes[child],
               sameText(UnsafeBufferPointer(rebasing: bytes[Int(offset)..<Int(offset) + Int(length)]), ascii: earlierIsASCII,
                        keyBytes, ascii: ascii) {
                return true
            }
            child = nodes[child + 1].end(at: child + 1)
        }
        return false
    }

    private func scalarText(_ index: Int) -> String {
        guard case .scalar(let offset, let length, _, _) = builder.nodes[index] else { return "" }
        return String(decoding: builder.bytes.buffer[Int(offset)..<Int(offset) + Int(length)], as: UTF8.self)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, kept as written.
    private mutating func number() throws(Failure) {
        let start = position
        if bytes[position] == UInt8(ascii: "-") { position += 1 }
        if position < bytes.count && bytes[position] == UInt8(ascii: "0") {
            position += 1
        } else if digits() == 0 {
            throw fail("expected a digit, found \(found)")
        }
        if position < bytes.count && bytes[position] == UInt8(ascii: ".") {
            position += 1
            if digits() == 0 { throw fail("expected a digit after '.', found \(found)") }
        }
        if position < bytes.count && (bytes[position] | 0x20) == UInt8(ascii: "e") {
            position += 1
            if position < bytes.count && (bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-")) {
                position += 1
            }
            if digits() == 0 { throw fail("expected a digit in the exponent, found \(found)") }
        }
        builder.scalar(start..<position, quoted: false, ascii: true)
    }

    private mutating func digits() -> Int {
        let start = position
        while position < bytes.count && (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position]) { position += 1 }
        return position - start
    }

    private func text(_ range: Range<Int>) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }

    /// A string from its opening quote, as a quoted scalar. Its bytes stay in the text unless it
    /// has escapes.
    private mutating func string() throws(Failure) {
        let opening = position
        position += 1
        var runStart = position
        var unescaped: Int?  // where the string starts in the builder's bytes, once an escape is met
        var ascii = true
        while true {
            let run = Self.plainRun(bytes, from: position)
            position = run.end
            ascii = ascii && run.ascii
            guard position < bytes.count else { throw fail("unterminated string", at: opening) }
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                if let unescaped {
                    builder.bytes.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<position]))
                    let range = unescaped..<builder.bytes.count
                    builder.scalar(range, quoted: true, ascii: isASCII(UnsafeBufferPointer(rebasing: builder.bytes.buffer[range])))
                } else {
                    builder.scalar(runStart..<position, quoted: true, ascii: ascii)
                }
                position += 1
                return
            }
            if byte == UInt8(ascii: "\\") {
                if unescaped == nil { unescaped = builder.bytes.count }
                builder.bytes.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<position]))
                try escape()
                runStart = position
                continue
            }
            throw fail("control character \(Self.codePoint(UInt32(byte))) in a string: it must be escaped")
        }
    }

    /// Where the run of string bytes from `start` ends: at a quote, a backslash, a control
    /// character or the end of the text; and whether the run is all ASCII. Most strings are one run.
    @inline(__always)
    private static func plainRun(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> (end: Int, ascii: Bool) {
        var position = start
        var high: UInt64 = 0
        // Eight bytes at a time: a byte's high bit in `stops` is set for a quote, a backslash or
        // a control character. Bits above the first can be false alarms; the first is exact.
        if let base = UnsafeRawPointer(bytes.baseAddress) {
            let ones: UInt64 = 0x0101_0101_0101_0101, highBits = ones &* 0x80
            while position + 8 <= bytes.count {
                let word = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: position, as: UInt64.self))
                let quote = word ^ (ones &* UInt64(UInt8(ascii: "\"")))
                let backslash = word ^ (ones &* UInt64(UInt8(ascii: "\\")))
                let stops = (((quote &- ones) & ~quote) | ((backslash &- ones) & ~backslash) | ((word &- ones &* 0x20) & ~word)) & highBits
                if stops != 0 {
                    let before = stops.trailingZeroBitCount / 8  // bytes before the first stop
                    high |= word & ((1 << (before * 8)) &- 1)
                    return (position + before, high & highBits == 0)
                }
                high |= word
                position += 8
            }
        }
        while position < bytes.count {
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") || byte < 0x20 { break }
            high |= UInt64(byte)
            position += 1
        }
        return (position, high & 0x8080_8080_8080_8080 == 0)
    }

    /// One escape sequence from its backslash, appended to the builder's bytes as UTF-8.
    private mutating func escape() throws(Failure) {
        let start = position
        position += 1
        guard position < bytes.count else { throw fail("unterminated string") }
        let letter = bytes[position]
        position += 1
        let simple: UInt8? = switch letter {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): letter
        case UInt8(ascii: "b"): 0x08
        case UInt8(ascii: "f"): 0x0C
        case UInt8(ascii: "n"): 0x0A
        case UInt8(ascii: "r"): 0x0D
        case UInt8(ascii: "t"): 0x09
        default: nil
        }
        if let simple {
            builder.bytes.append(simple)
            return
        }
        guard letter == UInt8(ascii: "u") else { throw fail("invalid escape '\\\(Character(Unicode.Scalar(letter)))'", at: start) }
        var code = try hexQuad(escapeAt: start)
        if (0xD800..<0xDC00).contains(code) {
            // A high surrogate must be followed by an escaped low one; together they are one scalar.
            let next = position
            guard bytes[position...].starts(with: [UInt8(ascii: "\\"), UInt8(ascii: "u")]) else {
                throw fail("unpaired surrogate \(escapeText(start))", at: start)
            }
            position += 2
            let low = try hexQuad(escapeAt: next)
            guard (0xDC00..<0xE000).contains(low) else { throw fail("unpaired surrogate \(escapeText(start))", at: start) }
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
        }
        guard let scalar = Unicode.Scalar(code) else { throw fail("unpaired surrogate \(escapeText(start))", at: start) }
        UTF8.encode(scalar) { builder.bytes.append($0) }
    }

    /// `U+000A`.
    private static func codePoint(_ value: UInt32) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return "U+" + String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    private func escapeText(_ start: Int) -> String { text(start..<min(start + 6, bytes.count)) }

    /// The four hex digits after `\u`.
    private mutating func hexQuad(escapeAt start: Int) throws(Failure) -> UInt32 {
        var code: UInt32 = 0
        for _ in 0..<4 {
            guard position < bytes.count, let digit = Self.hexValue(bytes[position]) else {
                throw fail("invalid escape \(escapeText(start)): \\u takes four hex digits", at: start)
            }
            code = code << 4 | digit
            position += 1
        }
        return code
    }

    private static func hexValue(_ byte: UInt8) -> UInt32? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt32(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt32(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }
}
