internal import Foundation

/// Cuts a watch body into its top-level JSON values, whatever the chunking: an event split
/// across chunks waits for its end, several events in one chunk all come out. Events are
/// newline-separated in practice; the framer does not depend on it.
struct JSONFramer {
    private var buffer: [UInt8] = []
    /// How far `buffer` has been scanned, and the scanner's state there.
    private var scanned = 0
    private var depth = 0
    private var inString = false
    private var escaped = false
    /// Where the value being scanned starts.
    private var start: Int?
    let maximumSize: Int

    init(maximumSize: Int = 64 << 20) {
        self.maximumSize = maximumSize
    }

    struct FramingError: Error, CustomStringConvertible {
        var description: String
    }

    /// Bytes not yet part of a complete value.
    var pending: Int { buffer.count - (start ?? buffer.count) }

    /// Adds received bytes and returns the values they complete, in order.
    mutating func append(_ bytes: some Sequence<UInt8>) throws(FramingError) -> [[UInt8]] {
        buffer.append(contentsOf: bytes)
        var values: [[UInt8]] = []
        var index = scanned
        while index < buffer.count {
            let byte = buffer[index]
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
            } else {
                switch byte {
                case UInt8(ascii: "{"), UInt8(ascii: "["):
                    if depth == 0 { start = index }
                    depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    guard depth > 0 else { throw FramingError(description: "unbalanced \(Character(Unicode.Scalar(byte))) in the stream") }
                    depth -= 1
                    if depth == 0, let first = start {
                        values.append(Array(buffer[first...index]))
                        start = nil
                    }
                case UInt8(ascii: "\""):
                    guard depth > 0 else { throw FramingError(description: "a string outside any object in the stream") }
                    inString = true
                case UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t"):
                    break
                default:
                    guard depth > 0 else {
                        throw FramingError(description: "unexpected byte 0x\(String(byte, radix: 16)) between events")
                    }
                }
            }
            index += 1
        }
        // Keep only the unfinished value.
        let keepFrom = start ?? buffer.count
        if keepFrom > 0 {
            buffer.removeFirst(keepFrom)
            if start != nil { start = 0 }
        }
        scanned = buffer.count
        if buffer.count > maximumSize {
            throw FramingError(description: "an event larger than \(maximumSize) bytes")
        }
        return values
    }
}

/// Any JSON value, decoded and encoded without loss (integers stay integers), so a watch
/// event's object can be handed on as text.
enum JSONValue: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .int(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .double(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    subscript(key: String) -> JSONValue? {
        if case .object(let fields) = self { return fields[key] }
        return nil
    }

    var string: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    var integer: Int64? {
        switch self {
        case .int(let value): value
        case .double(let value): Int64(exactly: value)
        default: nil
        }
    }

    /// The value as compact JSON text.
    var text: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        // Encoding a value that was decoded from JSON cannot fail (no NaN or infinity in JSON).
        let data = (try? encoder.encode(self)) ?? Data("null".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}

/// One line of a watch stream.
struct WatchEvent: Decodable {
    var type: String
    var object: JSONValue
}

/// The parts of a `*List` reply the client needs; the items go to `StateDecoder` as they are.
struct ListHead: Decodable {
    struct Metadata: Decodable {
        var resourceVersion: String?
        var `continue`: String?
    }

    var kind: String?
    var metadata: Metadata?
}

/// A `metav1.Status`, as the server sends for errors.
struct Status: Decodable {
    var kind: String?
    var code: Int?
    var reason: String?
    var message: String?
}
