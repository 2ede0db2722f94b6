/// Typed, path-aware reading of a composed YAML/JSON tree, shared by the state decoder and the
/// `KubeProxyConfiguration` reader. Every accessor either returns a value or throws a
/// `FieldError` naming the field, so a wrong type anywhere becomes a report, never a trap.

internal import Yams

/// One field that could not be read. The decoders turn it into a `Problem` or a `ConfigError`.
struct FieldError: Error, Hashable {
    /// Dotted path inside the object, e.g. `spec.ports[1].port`.
    var field: String
    var message: String
}

/// A place in a document: the value found there (nil when the field is absent) and its path.
///
/// YAML `null` (and an empty plain value) counts as absent, as it does for Kubernetes' JSON decoding.
struct Field {
    private let reading: Reading
    /// The node in `reading.tree`; nil when the field is absent.
    private let index: Int?
    /// This field's path in `reading`.
    private let step: Int

    /// What all the fields read from one root share: the tree, and the steps of their paths.
    ///
    /// Decoders read every field of every object, and building each one's dotted path as text took
    /// longer than parsing the JSON; so a path is kept as steps, each pointing at its parent, and
    /// spelled out only for a message. One shared object also keeps copying a field cheap.
    private final class Reading {
        /// Plain values (keys are the decoders' literals), so that dropping the steps of an object
        /// is one deallocation rather than a release per step.
        enum Step {
            case key(StaticString)
            case index(Int)
        }

        let tree: YAMLTree
        private let steps = RawStorage<(parent: Int, step: Step)>(capacity: 128)  // enough for most objects
        static let root = -1

        init(_ tree: YAMLTree) {
            self.tree = tree
        }

        func append(_ step: Step, below parent: Int) -> Int {
            steps.append((parent, step))
            return steps.count - 1
        }

        /// `spec.ports[1].port`; empty for the root.
        func path(_ step: Int) -> String {
            var chain: [Step] = []
            var current = step
            while current != Self.root {
                chain.append(steps[current].step)
                current = steps[current].parent
            }
            var text = ""
            for step in chain.reversed() {
                switch step {
                case .key(let key): text = Field.appending(key.description, to: text)
                case .index(let offset): text += "[\(offset)]"
                }
            }
            return text
        }
    }

    /// A document's root, whose path is empty.
    init(_ root: YAMLValue) {
        self.init(Reading(root.tree), root.index, step: Reading.root)
    }

    private init(_ reading: Reading, _ index: Int?, step: Int) {
        self.reading = reading
        self.index = index
        self.step = step
    }

    private func child(_ index: Int?, _ step: Reading.Step) -> Field {
        Field(reading, index, step: reading.append(step, below: self.step))
    }

    /// The same value as the root of a document, its path started afresh: for the items of a
    /// `List`, each reported as an object of its own.
    var asRoot: Field {
        Field(Reading(reading.tree), index, step: Reading.root)
    }

    /// Dotted path inside the document, e.g. `spec.ports[1].port`.
    var path: String { reading.path(step) }

    private static func appending(_ key: String, to path: String) -> String {
        path.isEmpty ? key : "\(path).\(key)"
    }

    var isAbsent: Bool { index.map { reading.tree.isNull($0) } ?? true }

    var isMapping: Bool { index.map { reading.tree.isMap($0) } ?? false }

    /// `body` applied to a scalar's UTF-8 bytes; nil for a list or mapping, or when absent.
    func scalarBytes<Result>(_ body: (UnsafeBufferPointer<UInt8>) -> Result) -> Result? {
        index.flatMap { reading.tree.withScalarBytes($0, body) }
    }

    /// A scalar's text and style; nil when absent, a list or a mapping.
    private var scalar: (text: String, quoted: Bool)? { index.flatMap { reading.tree.scalar($0) } }

    /// An unquoted decimal number, as opposed to a string (for int-or-string fields).
    var isPlainInteger: Bool { plainInteger != nil }

    /// A plain scalar's decimal value, read from its bytes; nil for anything else.
    private var plainInteger: Int? {
        guard let index, case .scalar(_, _, quoted: false, _) = reading.tree.nodes[index] else { return nil }
        return reading.tree.withScalarBytes(index) { parseDecimal(utf8: $0) } ?? nil
    }

    func error(_ message: String) -> FieldError { FieldError(field: path, message: message) }

    /// The child `key` of a mapping. Reading a child of an absent field gives an absent field, so
    /// optional sections need no special casing; reading one of a scalar or list is an error.
    ///
    /// Keys are literals: a path keeps them without copying, and they compare as bytes.
    subscript(key: StaticString) -> Field {
        get throws(FieldError) {
            guard let index else { return child(nil, .key(key)) }
            if reading.tree.isMap(index) {
                let value = key.withUTF8Buffer { reading.tree.value(in: index, forKey: $0, ascii: key.isASCII) }
                return child(value, .key(key))
            }
            guard reading.tree.isNull(index) else { throw error("expected a mapping, got \(summary)") }
            return child(nil, .key(key))
        }
    }

    /// The keys of a mapping, in document order (empty when absent).
    func keys() throws(FieldError) -> [String] {
        guard let index, !isAbsent else { return [] }
        guard reading.tree.isMap(index) else { throw error("expected a mapping, got \(summary)") }
        return reading.tree.entries(index).map { $0.key ?? "?" }
    }

    /// The elements of a list, each with its indexed path (empty when absent).
    func list() throws(FieldError) -> [Field] {
        guard let index, !isAbsent else { return [] }
        guard case .list(let count, _) = reading.tree.nodes[index] else { throw error("expected a list, got \(summary)") }
        var items: [Field] = []
        items.reserveCapacity(Int(count))
        try forEach { items.append($0) }
        return items
    }

    /// `body` called with each element of a list, in order (not at all when absent), without
    /// collecting them: for the lists every object has, such as an endpoint's addresses.
    func forEach(_ body: (Field) throws(FieldError) -> Void) throws(FieldError) {
        guard let index, !isAbsent else { return }
        guard case .list = reading.tree.nodes[index] else { throw error("expected a list, got \(summary)") }
        var offset = 0
        try reading.tree.forEachItem(index) { (item) throws(FieldError) in
            try body(child(item, .index(offset)))
            offset += 1
        }
    }

    /// Any scalar's text. Numbers and booleans are accepted as text too (`version: 1.0` in labels),
    /// since their spelling is what the user meant.
    func string() throws(FieldError) -> String? {
        if isAbsent { return nil }
        guard let (text, _) = scalar else { throw error("expected a string, got \(summary)") }
        return text
    }

    /// A string that must be present and non-empty.
    func requiredString() throws(FieldError) -> String {
        guard let text = try string(), !text.isEmpty else { throw error("is required") }
        return text
    }

    /// A plain decimal integer. A quoted number is rejected, as the API server rejects it.
    func int() throws(FieldError) -> Int? {
        if isAbsent { return nil }
        guard let value = plainInteger else { throw error("expected an integer, got \(summary)") }
        return value
    }

    /// `true`/`false` (and the YAML 1.1 spellings `yes`/`no`/`on`/`off` that Kubernetes' YAML reader accepts).
    func bool() throws(FieldError) -> Bool? {
        if isAbsent { return nil }
        guard let index, case .scalar(_, _, quoted: false, _) = reading.tree.nodes[index] else {
            throw error("expected true or false, got \(summary)")
        }
        // `true` and `false` as JSON spells them, from the bytes: making a String costs more.
        let spelled = reading.tree.withScalarBytes(index) { text -> Bool? in
            text.spells("true") ? true : text.spells("false") ? false : nil
        }
        if let value = spelled ?? nil { return value }
        switch scalar?.text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw error("expected true or false, got \(summary)")
        }
    }

    /// A `map[string]string` such as labels or a selector; nil when absent.
    func stringMap() throws(FieldError) -> [String: String]? {
        guard let index, !isAbsent else { return nil }
        guard reading.tree.isMap(index) else { throw error("expected a mapping, got \(summary)") }
        var result: [String: String] = [:]
        for (key, value) in reading.tree.entries(index) {
            guard let key else { throw error("keys must be strings") }
            if reading.tree.isNull(value) {
                result[key] = ""
            } else if let (text, _) = reading.tree.scalar(value) {
                result[key] = text
            } else {
                throw FieldError(field: Self.appending(key, to: path), message: "expected a string, got \(Self.summary(value, in: reading.tree))")
            }
        }
        return result
    }

    /// One of a closed set of spellings, e.g. a Service type; nil when absent.
    func oneOf<Value>(_ choices: KeyValuePairs<String, Value>, what: String) throws(FieldError) -> Value? {
        guard let text = try string() else { return nil }
        if let match = choices.first(where: { $0.key == text }) { return match.value }
        throw error("unknown \(what) \(quoted(text)) (expected \(choices.map(\.key).joinedAsAlternatives))")
    }

    /// A short description of the value for messages: the scalar quoted, or "a list" / "a mapping".
    var summary: String { Self.summary(index, in: reading.tree) }

    private static func summary(_ index: Int?, in tree: YAMLTree) -> String {
        guard let index else { return "nothing" }
        if let (text, quoted) = tree.scalar(index) { return quoted ? ServiceModel.quoted(text) : clipped(text) }
        return tree.isMap(index) ? "a mapping" : "a list"
    }
}

/// A decimal integer with an optional sign; no octal, hex, underscores or sexagesimal, which YAML 1.1
/// would read differently from Kubernetes.
func parseDecimal(_ text: String) -> Int? {
    text.utf8.withContiguousStorageIfAvailable { parseDecimal(utf8: $0) } ?? parseDecimal(utf8: Array(text.utf8))
}

/// The same, from UTF-8 bytes; nil on overflow, as `Int(_:)` gives.
func parseDecimal<Bytes: Collection<UInt8>>(utf8 text: Bytes) -> Int? {
    var digits = text[...]
    let negative = digits.first == UInt8(ascii: "-")
    if negative || digits.first == UInt8(ascii: "+") { digits = digits.dropFirst() }
    guard !digits.isEmpty else { return nil }
    var value = 0
    for byte in digits {
        guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return nil }
        let digit = Int(byte - UInt8(ascii: "0"))
        let (shifted, overflow) = value.multipliedReportingOverflow(by: 10)
        let (next, carry) = negative ? shifted.subtractingReportingOverflow(digit) : shifted.addingReportingOverflow(digit)
        guard !overflow && !carry else { return nil }
        value = next
    }
    return value
}

/// A value in double quotes for a message, shortened so a huge value cannot flood a log line.
func quoted(_ text: String) -> String { "\"\(clipped(text))\"" }

private func clipped(_ text: String) -> String {
    text.count <= 64 ? text : String(text.prefix(61)) + "..."
}

extension Array where Element == String {
    /// `a, b or c`.
    var joinedAsAlternatives: String {
        guard count > 1, let last else { return joined() }
        return dropLast().joined(separator: ", ") + " or " + last
    }
}

extension String {
    /// Whitespace trimmed from both ends, without Foundation.
    var trimmed: String {
        var slice = Substring(self)
        while let first = slice.first, first.isWhitespace { slice.removeFirst() }
        while let last = slice.last, last.isWhitespace { slice.removeLast() }
        return String(slice)
    }
}

/// One line for a YAML/JSON syntax error, with its line number shifted by `lineOffset` so it counts
/// in the whole text rather than in the document that was parsed.
func describeYAMLError(_ error: any Error, lineOffset: Int = 0) -> String {
    guard let error = error as? YamlError else { return "\(error)" }
    switch error {
    case .scanner(let context, let problem, let mark, _),
         .parser(let context, let problem, let mark, _),
         .composer(let context, let problem, let mark, _):
        let detail = context.map { " \($0.text)" } ?? ""
        return "line \(mark.line + lineOffset), column \(mark.column): \(problem)\(detail)"
    case .duplicatedKeysInMapping(let duplicates, let context):
        return "line \(context.mark.line + lineOffset): duplicate keys \(duplicates.map(quoted).joined(separator: ", "))"
    case .reader(let problem, _, _, _):
        return problem
    default:
        return "\(error)"
    }
}
