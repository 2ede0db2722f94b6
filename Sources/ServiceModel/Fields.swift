/// Typed, path-aware reading of a composed YAML/JSON tree, shared by the state decoder and the
/// `KubeProxyConfiguration` reader. Every accessor either returns a value or throws a
/// `FieldError` naming the field, so a wrong type anywhere becomes a report, never a trap.

internal import Yams

/// A parsed document, reduced to what the decoders read. Yams' own nodes carry tags, marks and weak
/// anchors that make every copy costly; converting once keeps field lookups cheap on large states.
enum YAMLValue: Sendable {
    /// `quoted` is true for quoted and block scalars, which are always strings; only plain ones can
    /// be numbers, booleans or null.
    case scalar(String, quoted: Bool)
    case list([YAMLValue])
    /// Entries in document order; a key is nil when it is not a scalar.
    case map([(key: String?, value: YAMLValue)])

    /// The node count a document may reach per byte of its text. Only alias expansion (a "billion
    /// laughs" document) can exceed it, and it is refused rather than expanded.
    static let nodesPerByte = 2

    /// Converts a Yams tree, spending one unit of `budget` per node.
    init(_ node: Yams.Node, budget: inout Int) throws(YAMLTooLarge) {
        budget -= 1
        guard budget >= 0 else { throw YAMLTooLarge() }
        switch node {
        case .scalar(let scalar):
            self = .scalar(scalar.string, quoted: scalar.style != .plain && scalar.style != .any)
        case .sequence(let sequence):
            var items: [YAMLValue] = []
            items.reserveCapacity(sequence.count)
            for item in sequence { items.append(try YAMLValue(item, budget: &budget)) }
            self = .list(items)
        case .mapping(let mapping):
            var entries: [(key: String?, value: YAMLValue)] = []
            entries.reserveCapacity(mapping.count)
            for (key, value) in mapping {
                entries.append((key.scalar?.string, try YAMLValue(value, budget: &budget)))
            }
            self = .map(entries)
        case .alias:
            self = .scalar("*alias", quoted: true)  // Yams resolves aliases itself; not reached in practice
        }
    }

    /// Every non-empty document in `text`, converted.
    static func documents(in text: String) throws -> [YAMLValue] {
        let parser = try Parser(yaml: text, resolver: .basic, encoding: .utf8)
        var budget = nodesPerByte * text.utf8.count + 16
        var documents: [YAMLValue] = []
        while let root = try parser.nextRoot() {
            documents.append(try YAMLValue(root, budget: &budget))
        }
        return documents
    }

    var isNull: Bool {
        guard case .scalar(let text, let quoted) = self else { return false }
        return !quoted && (text.isEmpty || text == "~" || text == "null" || text == "Null" || text == "NULL")
    }
}

/// A document with far more nodes than its size allows, which only alias expansion produces.
struct YAMLTooLarge: Error, CustomStringConvertible {
    var description: String { "the document expands to too many nodes (aliases repeated too often)" }
}

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
    let node: YAMLValue?
    let path: String

    init(_ node: YAMLValue?, path: String = "") {
        self.node = node
        self.path = path
    }

    var isAbsent: Bool { node?.isNull ?? true }

    var isMapping: Bool {
        if case .map? = node { return true }
        return false
    }

    /// An unquoted decimal number, as opposed to a string (for int-or-string fields).
    var isPlainInteger: Bool {
        guard case .scalar(let text, quoted: false)? = node else { return false }
        return parseDecimal(text) != nil
    }

    func error(_ message: String) -> FieldError { FieldError(field: path, message: message) }

    /// The child `key` of a mapping. Reading a child of an absent field gives an absent field, so
    /// optional sections need no special casing; reading one of a scalar or list is an error.
    subscript(key: String) -> Field {
        get throws(FieldError) {
            let childPath = path.isEmpty ? key : "\(path).\(key)"
            if isAbsent { return Field(nil, path: childPath) }
            guard case .map(let entries)? = node else { throw error("expected a mapping, got \(summary)") }
            let index = entries.firstIndex { $0.key == key }
            return Field(index.map { entries[$0].value }, path: childPath)
        }
    }

    /// The keys of a mapping, in document order (empty when absent).
    func keys() throws(FieldError) -> [String] {
        if isAbsent { return [] }
        guard case .map(let entries)? = node else { throw error("expected a mapping, got \(summary)") }
        return entries.map { $0.key ?? "?" }
    }

    /// The elements of a list, each with its indexed path (empty when absent).
    func list() throws(FieldError) -> [Field] {
        if isAbsent { return [] }
        guard case .list(let items)? = node else { throw error("expected a list, got \(summary)") }
        return items.enumerated().map { Field($0.element, path: "\(path)[\($0.offset)]") }
    }

    /// Any scalar's text. Numbers and booleans are accepted as text too (`version: 1.0` in labels),
    /// since their spelling is what the user meant.
    func string() throws(FieldError) -> String? {
        if isAbsent { return nil }
        guard case .scalar(let text, _)? = node else { throw error("expected a string, got \(summary)") }
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
        guard case .scalar(let text, quoted: false)? = node, let value = parseDecimal(text) else {
            throw error("expected an integer, got \(summary)")
        }
        return value
    }

    /// `true`/`false` (and the YAML 1.1 spellings `yes`/`no`/`on`/`off` that Kubernetes' YAML reader accepts).
    func bool() throws(FieldError) -> Bool? {
        if isAbsent { return nil }
        guard case .scalar(let text, quoted: false)? = node else { throw error("expected true or false, got \(summary)") }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw error("expected true or false, got \(summary)")
        }
    }

    /// A `map[string]string` such as labels or a selector; nil when absent.
    func stringMap() throws(FieldError) -> [String: String]? {
        if isAbsent { return nil }
        guard case .map(let entries)? = node else { throw error("expected a mapping, got \(summary)") }
        var result: [String: String] = [:]
        for (key, value) in entries {
            guard let key else { throw error("keys must be strings") }
            result[key] = try Field(value, path: "\(path).\(key)").string() ?? ""
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
    var summary: String {
        switch node {
        case .none: "nothing"
        case .scalar(let text, let quoted)?: quoted ? ServiceModel.quoted(text) : clipped(text)
        case .list?: "a list"
        case .map?: "a mapping"
        }
    }
}

/// A decimal integer with an optional sign; no octal, hex, underscores or sexagesimal, which YAML 1.1
/// would read differently from Kubernetes.
func parseDecimal(_ text: String) -> Int? {
    var digits = Substring(text).utf8
    if digits.first == UInt8(ascii: "-") || digits.first == UInt8(ascii: "+") { digits = digits.dropFirst() }
    guard !digits.isEmpty, digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else { return nil }
    return Int(text)
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
