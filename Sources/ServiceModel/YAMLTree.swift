internal import Yams

/// Parsed YAML or JSON, reduced to what the decoders read and stored flat: every node in one array
/// in document order, every scalar a range of one byte array.
///
/// A tree of enums and strings costs an allocation per mapping, list and long string to build and
/// as many to drop, and retains at every step of a walk through it: on a large state that took
/// longer than reading the JSON. Here keys are compared as bytes, and only the scalars the
/// decoders read become `String`s.
final class YAMLTree {
    enum Node {
        /// `quoted` is true for quoted and block scalars, which are always strings; only plain ones
        /// can be numbers, booleans or null. `ascii` tells whether bytes alone decide equality.
        case scalar(offset: UInt32, length: UInt32, quoted: Bool, ascii: Bool)
        /// `end` is the index just past the last node inside.
        case list(count: UInt32, end: UInt32)
        /// The nodes inside are key, value, key, value…; a key that is not a scalar is kept as an
        /// empty list, since the decoders only need to know that it is not text. So a key is always
        /// one node, and its value the next.
        case map(count: UInt32, end: UInt32)

        /// The index just past this node, found at `index`, and everything inside it.
        func end(at index: Int) -> Int {
            switch self {
            case .scalar: index + 1
            case .list(_, let end), .map(_, let end): Int(end)
            }
        }
    }

    /// Every scalar's bytes. For JSON, a copy of the text (a string without escapes is read where
    /// it stands in it) followed by the strings that had escapes; for YAML, each distinct scalar once.
    private let bytes: RawStorage<UInt8>
    private let storedNodes: RawStorage<Node>

    /// The most bytes and nodes that `UInt32` offsets reach.
    static let maxSize = Int(UInt32.max)

    fileprivate init(bytes: RawStorage<UInt8>, nodes: RawStorage<Node>) {
        self.bytes = bytes
        self.storedNodes = nodes
    }

    var nodes: UnsafeBufferPointer<Node> { storedNodes.buffer }

    /// The index just past `index` and everything inside it.
    func after(_ index: Int) -> Int { nodes[index].end(at: index) }

    /// A scalar's text and style; nil for a list or mapping.
    func scalar(_ index: Int) -> (text: String, quoted: Bool)? {
        guard case .scalar(let offset, let length, let quoted, _) = nodes[index] else { return nil }
        return (String(decoding: bytes.buffer[range(offset, length)], as: UTF8.self), quoted)
    }

    /// `body` applied to a scalar's bytes; nil for a list or mapping.
    func withScalarBytes<Result>(_ index: Int, _ body: (UnsafeBufferPointer<UInt8>) -> Result) -> Result? {
        guard case .scalar(let offset, let length, _, _) = nodes[index] else { return nil }
        return body(UnsafeBufferPointer(rebasing: bytes.buffer[range(offset, length)]))
    }

    func isMap(_ index: Int) -> Bool {
        if case .map = nodes[index] { return true }
        return false
    }

    /// A plain `null`, `~` or nothing at all.
    func isNull(_ index: Int) -> Bool {
        guard case .scalar(let offset, let length, quoted: false, _) = nodes[index] else { return false }
        switch length {
        case 0: return true
        case 1: return bytes[Int(offset)] == UInt8(ascii: "~")
        case 4:
            let start = Int(offset)
            let (n, u, l, l2) = (bytes[start], bytes[start + 1], bytes[start + 2], bytes[start + 3])
            return (n == UInt8(ascii: "n") || n == UInt8(ascii: "N"))
                && ((u, l, l2) == (UInt8(ascii: "u"), UInt8(ascii: "l"), UInt8(ascii: "l"))
                    || (n == UInt8(ascii: "N") && (u, l, l2) == (UInt8(ascii: "U"), UInt8(ascii: "L"), UInt8(ascii: "L"))))
        default: return false
        }
    }

    /// The value of the first entry of the mapping at `map` whose key is spelled `key`; nil when
    /// there is none. The decoders' most frequent operation: keys are compared as bytes, without
    /// making strings of them.
    func value(in map: Int, forKey key: UnsafeBufferPointer<UInt8>, ascii keyIsASCII: Bool) -> Int? {
        guard case .map(let count, _) = nodes[map] else { return nil }
        let nodes = nodes, bytes = bytes.buffer
        var child = map + 1
        for _ in 0..<count {
            if case .scalar(let offset, let length, _, let ascii) = nodes[child],
               sameText(UnsafeBufferPointer(rebasing: bytes[range(offset, length)]), ascii: ascii, key, ascii: keyIsASCII) {
                return child + 1
            }
            child = nodes[child + 1].end(at: child + 1)
        }
        return nil
    }

    /// Calls `body` with each node inside the list at `index`, in order.
    func forEachItem<Failure>(_ index: Int, _ body: (Int) throws(Failure) -> Void) throws(Failure) {
        guard case .list(let count, _) = nodes[index] else { return }
        var item = index + 1
        for _ in 0..<count {
            try body(item)
            item = after(item)
        }
    }

    /// The nodes inside the list at `index` (none for anything else).
    func items(_ index: Int) -> [Int] {
        var items: [Int] = []
        forEachItem(index) { items.append($0) }
        return items
    }

    /// The entries of the mapping at `index` (none for anything else); a key is nil when it is not
    /// a scalar.
    func entries(_ index: Int) -> [(key: String?, value: Int)] {
        guard case .map(let count, _) = nodes[index] else { return [] }
        var entries: [(key: String?, value: Int)] = []
        entries.reserveCapacity(Int(count))
        var key = index + 1
        for _ in 0..<count {
            entries.append((scalar(key)?.text, key + 1))
            key = after(key + 1)
        }
        return entries
    }

    private func range(_ offset: UInt32, _ length: UInt32) -> Range<Int> {
        Int(offset)..<Int(offset) + Int(length)
    }
}

/// One node of a `YAMLTree`: what the readers hand out for each document. Spelled out as
/// `contents`, it is what the tests compare between the readers.
struct YAMLValue {
    let tree: YAMLTree
    let index: Int

    enum Contents {
        case scalar(String, quoted: Bool)
        case list([YAMLValue])
        /// Entries in document order; a key is nil when it is not a scalar.
        case map([(key: String?, value: YAMLValue)])
    }

    var contents: Contents {
        if let (text, quoted) = tree.scalar(index) { return .scalar(text, quoted: quoted) }
        if tree.isMap(index) {
            return .map(tree.entries(index).map { ($0.key, YAMLValue(tree: tree, index: $0.value)) })
        }
        return .list(tree.items(index).map { YAMLValue(tree: tree, index: $0) })
    }

    /// The node count a document may reach per byte of its text. Only alias expansion (a "billion
    /// laughs" document) can exceed it, and it is refused rather than expanded.
    static let nodesPerByte = 2

    /// Every non-empty document in `text`, read by Yams and converted.
    static func documents(in text: String) throws -> [YAMLValue] {
        let parser = try Parser(yaml: text, resolver: .basic, encoding: .utf8)
        var builder = YAMLTreeBuilder(bytes: RawStorage(capacity: text.utf8.count))
        var conversion = YamsConversion(budget: nodesPerByte * text.utf8.count + 16)
        var roots: [Int] = []
        while let root = try parser.nextRoot() {
            roots.append(builder.nodeCount)
            try conversion.append(root, to: &builder)
        }
        let tree = builder.tree()
        return roots.map { YAMLValue(tree: tree, index: $0) }
    }
}

/// Whether two UTF-8 texts are equal as Swift compares strings: canonically equivalent spellings
/// match, as they did when keys were `String`s. ASCII text is equal only byte for byte.
@inline(__always)
func sameText(_ first: UnsafeBufferPointer<UInt8>, ascii firstIsASCII: Bool,
              _ second: UnsafeBufferPointer<UInt8>, ascii secondIsASCII: Bool) -> Bool {
    if first.count == second.count && equalBytes(first, second) { return true }
    if firstIsASCII && secondIsASCII { return false }
    return String(decoding: first, as: UTF8.self) == String(decoding: second, as: UTF8.self)
}

extension UnsafeBufferPointer<UInt8> {
    /// Whether these bytes are exactly `word`'s.
    func spells(_ word: StaticString) -> Bool {
        word.withUTF8Buffer { count == $0.count && equalBytes(self, $0) }
    }
}

/// Whether two buffers of one length hold the same bytes, compared eight at a time.
private func equalBytes(_ first: UnsafeBufferPointer<UInt8>, _ second: UnsafeBufferPointer<UInt8>) -> Bool {
    guard let left = UnsafeRawPointer(first.baseAddress), let right = UnsafeRawPointer(second.baseAddress) else {
        return first.count == 0
    }
    var offset = 0
    while offset + 8 <= first.count {
        if left.loadUnaligned(fromByteOffset: offset, as: UInt64.self) != right.loadUnaligned(fromByteOffset: offset, as: UInt64.self) {
            return false
        }
        offset += 8
    }
    while offset < first.count {
        if first[offset] != second[offset] { return false }
        offset += 1
    }
    return true
}

/// Whether every byte is below 0x80, checked eight at a time.
func isASCII(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
    guard let base = UnsafeRawPointer(bytes.baseAddress) else { return true }
    var offset = 0
    while offset + 8 <= bytes.count {
        if base.loadUnaligned(fromByteOffset: offset, as: UInt64.self) & 0x8080_8080_8080_8080 != 0 { return false }
        offset += 8
    }
    while offset < bytes.count {
        if bytes[offset] >= 0x80 { return false }
        offset += 1
    }
    return true
}

/// Appends nodes in document order, for the JSON reader and the Yams conversion.
struct YAMLTreeBuilder {
    let nodes: RawStorage<YAMLTree.Node>
    /// The scalars' bytes: a reader finds a scalar here, or appends it and then makes its node.
    let bytes: RawStorage<UInt8>

    init(bytes: RawStorage<UInt8>, expectedNodes: Int = 0) {
        self.bytes = bytes
        nodes = RawStorage(capacity: expectedNodes)
    }

    var nodeCount: Int { nodes.count }

    /// The index just past `index` and everything inside it (which must be complete).
    func after(_ index: Int) -> Int { nodes[index].end(at: index) }

    func scalar(_ range: Range<Int>, quoted: Bool, ascii: Bool) {
        nodes.append(.scalar(offset: UInt32(range.lowerBound), length: UInt32(range.count), quoted: quoted, ascii: ascii))
    }

    /// Starts a list or mapping; `closeList` or `closeMap` fills it in once its contents are appended.
    func open() -> Int {
        nodes.append(.list(count: 0, end: 0))
        return nodes.count - 1
    }

    func closeList(_ index: Int, count: Int) {
        nodes[index] = .list(count: UInt32(count), end: UInt32(nodes.count))
    }

    func closeMap(_ index: Int, count: Int) {
        nodes[index] = .map(count: UInt32(count), end: UInt32(nodes.count))
    }

    /// Drops the nodes from `index` on: what a broken JSON value left.
    func truncate(to index: Int) {
        nodes.truncate(to: index)
    }

    /// Whether the bytes and nodes still fit `UInt32` offsets.
    var fits: Bool { bytes.count <= YAMLTree.maxSize && nodes.count <= YAMLTree.maxSize }

    func tree() -> YAMLTree {
        YAMLTree(bytes: bytes, nodes: nodes)
    }
}

/// A growable buffer read through a plain pointer. Reading a Swift array that a class holds
/// retains and releases it around each access, which on the decoders' hot path cost as much as
/// the lookup itself.
final class RawStorage<Element: BitwiseCopyable> {
    // Unchecked: a storage belongs to one reader on one thread, and its methods do not re-enter.
    @exclusivity(unchecked) private var base: UnsafeMutablePointer<Element>
    @exclusivity(unchecked) private(set) var count = 0
    @exclusivity(unchecked) private var capacity: Int

    init(capacity: Int) {
        self.capacity = max(capacity, 16)
        base = .allocate(capacity: self.capacity)
    }

    deinit {
        base.deallocate()
    }

    /// Valid until the next append.
    var buffer: UnsafeBufferPointer<Element> { UnsafeBufferPointer(start: base, count: count) }

    subscript(index: Int) -> Element {
        get {
            precondition(index >= 0 && index < count)
            return base[index]
        }
        set {
            precondition(index >= 0 && index < count)
            base[index] = newValue
        }
    }

    @inline(__always)
    func append(_ element: Element) {
        if count == capacity { reserve(count + 1) }
        base[count] = element
        count += 1
    }

    func append(contentsOf elements: UnsafeBufferPointer<Element>) {
        guard let source = elements.baseAddress else { return }
        reserve(count + elements.count)
        (base + count).initialize(from: source, count: elements.count)
        count += elements.count
    }

    func truncate(to newCount: Int) {
        count = min(count, newCount)
    }

    @inline(never)
    private func reserve(_ needed: Int) {
        guard needed > capacity else { return }
        let grown = max(needed, capacity * 2)
        let moved = UnsafeMutablePointer<Element>.allocate(capacity: grown)
        moved.initialize(from: base, count: count)
        base.deallocate()
        base = moved
        capacity = grown
    }
}

/// Yams' nodes into a `YAMLTree`, spending one unit of `budget` per node.
private struct YamsConversion {
    var budget: Int
    /// Where each scalar's bytes already are: an alias repeats a scalar without
    /// repeating its bytes, as the shared `String` storage did before.
    private var stored: [String: Range<Int>] = [:]

    init(budget: Int) {
        self.budget = budget
    }

    mutating func append(_ node: Yams.Node, to builder: inout YAMLTreeBuilder) throws(YAMLTooLarge) {
        budget -= 1
        guard budget >= 0 else { throw YAMLTooLarge() }
        switch node {
        case .scalar(let scalar):
            try appendScalar(scalar.string, quoted: scalar.style != .plain && scalar.style != .any, to: &builder)
        case .sequence(let sequence):
            let start = builder.open()
            for item in sequence { try append(item, to: &builder) }
            builder.closeList(start, count: sequence.count)
        case .mapping(let mapping):
            let start = builder.open()
            for (key, value) in mapping {
                if let key = key.scalar {
                    try appendScalar(key.string, quoted: key.style != .plain && key.style != .any, to: &builder)
                } else {
                    builder.closeList(builder.open(), count: 0)
                }
                try append(value, to: &builder)
            }
            builder.closeMap(start, count: mapping.count)
        case .alias:
            try appendScalar("*alias", quoted: true, to: &builder)  // Yams resolves aliases itself; not reached in practice
        }
    }

    private mutating func appendScalar(_ text: String, quoted: Bool, to builder: inout YAMLTreeBuilder) throws(YAMLTooLarge) {
        // A dictionary hit may be a canonically equivalent spelling: reuse only the same bytes.
        let ascii = text.utf8.allSatisfy { $0 < 0x80 }  // Yams' scalars are few; no need for speed here
        if let range = stored[text], builder.bytes.buffer[range].elementsEqual(text.utf8) {
            builder.scalar(range, quoted: quoted, ascii: ascii)
            return
        }
        let start = builder.bytes.count
        var text = text  // `withUTF8` is mutating; a native string is not copied
        text.withUTF8 { builder.bytes.append(contentsOf: $0) }
        guard builder.fits else { throw YAMLTooLarge() }
        stored[text] = start..<builder.bytes.count
        builder.scalar(start..<builder.bytes.count, quoted: quoted, ascii: ascii)
    }
}

/// A document with far more nodes than its size allows, which only alias expansion produces.
struct YAMLTooLarge: Error, CustomStringConvertible {
    var description: String { "the document expands to too many nodes (aliases repeated too often)" }
}
