import ServiceModel

extension Array where Element == NftIR.Element {
    /// Sorts the elements in key order (`KeyValue` by `KeyValue`, a shorter key first when one is a
    /// prefix of the other), as a set lists them. Keys are unique in a set, so the order is total.
    ///
    /// A large ruleset sorts hundreds of thousands of elements: each key is encoded once into
    /// words that compare as the key does, and the indices are sorted over those words, so no
    /// comparison touches an array or its reference count. In place.
    public mutating func sortByKey() {
        guard count > 1 else { return }
        let width = self[0].key.count * KeyWords.perValue
        guard width > 0, allSatisfy({ $0.key.count * KeyWords.perValue == width }) else {
            sort { $0.key.lexicographicallyPrecedes($1.key) }
            return
        }
        var words = [UInt64](repeating: 0, count: count * width)
        words.withUnsafeMutableBufferPointer { words in
            for (index, element) in enumerated() {
                for (field, value) in element.key.enumerated() {
                    KeyWords.encode(value, into: words.baseAddress! + index * width + field * KeyWords.perValue)
                }
            }
        }
        var order = [Int32](unsafeUninitializedCapacity: count) { buffer, initialized in
            for index in 0..<count { buffer[index] = Int32(index) }
            initialized = count
        }
        words.withUnsafeBufferPointer { words in
            let base = words.baseAddress!
            order.sort { lhs, rhs in
                let a = base + Int(lhs) * width, b = base + Int(rhs) * width
                for offset in 0..<width where a[offset] != b[offset] { return a[offset] < b[offset] }
                return false
            }
        }
        // Each element moved into place by following the permutation's cycles: moves, not
        // copies, so no reference count is touched.
        withUnsafeMutableBufferPointer { elements in
            for start in 0..<order.count where order[start] >= 0 {
                var position = start
                while true {
                    let from = Int(order[position])
                    order[position] = -1
                    if from == start { break }
                    elements.swapAt(position, from)
                    position = from
                }
            }
        }
    }
}

extension Array where Element == KeyValue {
    /// Feeds the key to `hasher` as the words `sortByKey` compares, in one call. A merge hashes
    /// a key per element of the ruleset, and hashing a key value by value cost more than the rest
    /// of the merge. Equal keys give equal words.
    public func hashWords(into hasher: inout Hasher) {
        withUnsafeTemporaryAllocation(of: UInt64.self, capacity: count * KeyWords.perValue) { words in
            for (index, value) in enumerated() {
                KeyWords.encode(value, into: words.baseAddress! + index * KeyWords.perValue)
            }
            hasher.combine(bytes: UnsafeRawBufferPointer(words))
        }
    }
}

/// A `KeyValue` as four words that compare (lexicographically) as `KeyValue.<` does: the case
/// first (address, proto, port, prefix), then the address family, the value, the prefix length.
private enum KeyWords {
    static let perValue = 4

    static func encode(_ value: KeyValue, into words: UnsafeMutablePointer<UInt64>) {
        switch value {
        case .address(let ip):
            words[0] = ip.family == .ipv4 ? 0 : 1
            words[1] = ip.high
            words[2] = ip.low
            words[3] = 0
        case .proto(let proto):
            words[0] = 1 << 8
            words[1] = UInt64(proto.number)
            words[2] = 0
            words[3] = 0
        case .port(let port):
            words[0] = 2 << 8
            words[1] = UInt64(port)
            words[2] = 0
            words[3] = 0
        case .prefix(let cidr):
            words[0] = 3 << 8 | (cidr.family == .ipv4 ? 0 : 1)
            words[1] = cidr.address.high
            words[2] = cidr.address.low
            words[3] = UInt64(cidr.prefixLength)
        }
    }
}
