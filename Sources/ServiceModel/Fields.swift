/// Typed, path-aware reading of a composed YAML/JSON tree, shared by the state decoder and the
/// `KubeProxyConfiguration` reader. Every accessor either returns a value or throws a
/// `FieldError` naming the field, so a wrong type anywhere becomes a report, never a trap.

internal import Yams

/// Yams' tree node; `Node` in this module is the Kubernetes Node.
typealias YAMLNode = Yams.Node

/// One field that could not be read. The decoders turn it into a `Problem` or a `ConfigError`.
struct FieldError: Error, Hashable {
    /// Dotted path inside the object, e.g. `spec.ports[1].port`.
    var field: String
    var message: String
}

/// A place in a document: the node found there (nil when the field is absent) and its path.
///
/// YAML `null` (and an empty plain value) counts as absent, as it does for Kubernetes' JSON decoding.
struct Field {
    let node: YAMLNode?
    let path: String

    init(_ node: YAMLNode?, path: String = "") {
        self.node = node
        self.path = path
    }

    var isAbsent: Bool {
        guard let node else { return true }
        if case .scalar(let scalar) = node { return scalar.isNull }
        return false
    }

    /// An unquoted decimal number, as opposed to a string (for int-or-string fields).
    var isPlainInteger: Bool {
        guard case .scalar(let scalar)? = node else { return false }
        return !scalar.isQuoted && parseDecimal(scalar.string) != nil
    }

    func error(_ message: String) -> FieldError { FieldError(field: path, message: message) }

    /// The child `key` of a mapping. Reading a child of an absent field gives an absent field, so
    /// optional sections need no special casing; reading one of a scalar or list is an error.
    subscript(key: String) -> Field {
        get throws(FieldError) {
            let childPath = path.isEmpty ? key : "\(path).\(key)"
            if isAbsent { return Field(nil, path: childPath) }
            guard case .mapping(let mapping)? = node else { throw error("expected a mapping, got \(summary)") }
            // Compare key text ourselves: Yams' own lookup also compares resolved tags.
            let value = mapping.first { $0.key.scalar?.string == key }?.value
            return Field(value, path: childPath)
        }
    }

    /// The keys of a mapping, in document order (empty when absent).
    func keys() throws(FieldError) -> [String] {
        if isAbsent { return [] }
        guard case .mapping(let mapping)? = node else { throw error("expected a mapping, got \(summary)") }
        return mapping.map { $0.key.scalar?.string ?? "?" }
    }

    /// The elements of a list, each with its indexed path (empty when absent).
    func list() throws(FieldError) -> [Field] {
        if isAbsent { return [] }
        guard case .sequence(let sequence)? = node else { throw error("expected a list, got \(summary)") }
        return sequence.enumerated().map { Field($0.element, path: "\(path)[\($0.offset)]") }
    }

    /// Any scalar's text. Numbers and booleans are accepted as text too (`version: 1.0` in labels),
    /// since their spelling is what the user meant.
    func string() throws(FieldError) -> String? {
        if isAbsent { return nil }
        guard case .scalar(let scalar)? = node else { throw error("expected a string, got \(summary)") }
        return scalar.string
    }

    /// A string that must be present and non-empty.
    func requiredString() throws(FieldError) -> String {
        guard let text = try string(), !text.isEmpty else { throw error("is required") }
        return text
    }

    /// A plain decimal integer. A quoted number is rejected, as the API server rejects it.
    func int() throws(FieldError) -> Int? {
        if isAbsent { return nil }
        guard case .scalar(let scalar)? = node, !scalar.isQuoted else {
            throw error("expected an integer, got \(summary)")
        }
        guard let value = parseDecimal(scalar.string) else {
            throw error("expected an integer, got \(summary)")
        }
        return value
    }

    /// `true`/`false` (and the YAML 1.1 spellings `yes`/`no`/`on`/`off` that Kubernetes' YAML reader accepts).
    func bool() throws(FieldError) -> Bool? {
        if isAbsent { return nil }
        guard case .scalar(let scalar)? = node, !scalar.isQuoted else {
            throw error("expected true or false, got \(summary)")
        }
        switch scalar.string.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw error("expected true or false, got \(summary)")
        }
    }

    /// A `map[string]string` such as labels or a selector; nil when absent.
    func stringMap() throws(FieldError) -> [String: String]? {
        if isAbsent { return nil }
        guard case .mapping(let mapping)? = node else { throw error("expected a mapping, got \(summary)") }
        var result: [String: String] = [:]
        for (key, value) in mapping {
            guard case .scalar(let keyScalar) = key else { throw error("keys must be strings") }
            let child = Field(value, path: "\(path).\(keyScalar.string)")
            result[keyScalar.string] = try child.string() ?? ""
        }
        return result
    }

    /// One of a closed set of spellings, e.g. a Service type; nil when absent.
    func oneOf<Value>(_ choices: KeyValuePairs<String, Value>, what: String) throws(FieldError) -> Value? {
        guard let text = try string() else { return nil }
        if let match = choices.first(where: { $0.key == text }) { return match.value }
        throw error("unknown \(what) \(quoted(text)) (expected \(choices.map(\.key).joinedAsAlternatives))")
    }

    /// A short description of the node for messages: the scalar quoted, or "a list" / "a mapping".
    var summary: String {
        switch node {
        case .none: "nothing"
        case .scalar(let scalar)?: scalar.isQuoted ? quoted(scalar.string) : clipped(scalar.string)
        case .sequence?: "a list"
        case .mapping?: "a mapping"
        case .alias?: "an alias"
        }
    }
}

extension YAMLNode.Scalar {
    /// Quoted and block scalars are always strings; only plain ones can be numbers, booleans or null.
    var isQuoted: Bool { style != .plain && style != .any }

    var isNull: Bool { !isQuoted && ["", "~", "null", "Null", "NULL"].contains(string) }
}

/// A decimal integer with an optional sign; no octal, hex, underscores or sexagesimal, which YAML 1.1
/// would read differently from Kubernetes.
func parseDecimal(_ text: String) -> Int? {
    var digits = Substring(text)
    if digits.first == "-" || digits.first == "+" { digits = digits.dropFirst() }
    guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
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
        count <= 1 ? joined() : dropLast().joined(separator: ", ") + " or " + last!
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
