internal import CNftables
import NftIR
import ServiceModel
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension NetlinkSocket {
    /// Sends one GET request (its string attributes, e.g. NFTA_RULE_TABLE and NFTA_RULE_CHAIN, in
    /// order) and hands each reply message to `body`, until NLMSG_DONE (dump), the single reply
    /// (plain get) or an error. A dump the kernel marks inconsistent (NLM_F_DUMP_INTR: the ruleset
    /// changed meanwhile) throws EINTR so the caller re-reads.
    func request(_ type: nf_tables_msg_types, family: UInt8, dump: Bool, _ names: (type: UInt16, value: String)...,
                 each body: (UnsafePointer<nlmsghdr>) throws(BackendError) -> Void) throws(BackendError) {
        let seq = nextSeq()
        try sendRequest(type: UInt16(type.rawValue), family: family, flags: UInt16(NLM_F_REQUEST) | (dump ? UInt16(NLM_F_DUMP) : 0),
                        seq: seq, names: names)
        var finished = false
        while !finished {
            let status = try receive(blocking: true) { message throws(BackendError) in
                // Skip anything that is not the answer to this request (there should be nothing).
                guard !finished, message.pointee.nlmsg_seq == seq, message.pointee.nlmsg_pid == portID else { return }
                switch Int32(message.pointee.nlmsg_type) {
                case NLMSG_DONE:
                    if message.pointee.nlmsg_flags & UInt16(NLM_F_DUMP_INTR) != 0 { throw BackendError(errno: EINTR, message: "dump interrupted") }
                    finished = true
                case NLMSG_ERROR:
                    guard let ack = Ack(message) else { throw BackendError(errno: EPROTO, message: "malformed netlink error message") }
                    if ack.errno == 0 { finished = true; return }
                    throw BackendError(errno: ack.errno, message: "\(Self.name(type)): \(errorText(ack.errno))" + (ack.text.map { " (\($0))" } ?? ""))
                default:
                    if message.pointee.nlmsg_flags & UInt16(NLM_F_DUMP_INTR) != 0 { throw BackendError(errno: EINTR, message: "dump interrupted") }
                    try body(message)
                    if !dump { finished = true }
                }
            }
            if status == .overrun { throw BackendError(errno: ENOBUFS, message: "netlink dropped part of a dump (receive buffer overrun)") }
        }
    }

    /// What a request is called in error messages.
    static func name(_ type: nf_tables_msg_types) -> String {
        switch type {
        case NFT_MSG_GETGEN: "reading the ruleset generation (NFT_MSG_GETGEN)"
        case NFT_MSG_GETTABLE: "listing tables (NFT_MSG_GETTABLE)"
        case NFT_MSG_GETCHAIN: "listing chains (NFT_MSG_GETCHAIN)"
        case NFT_MSG_GETRULE: "listing rules (NFT_MSG_GETRULE)"
        case NFT_MSG_GETSET: "listing sets (NFT_MSG_GETSET)"
        case NFT_MSG_GETSETELEM: "listing set elements (NFT_MSG_GETSETELEM)"
        default: "netlink request \(type.rawValue)"
        }
    }

    /// The ruleset generation id (NFT_MSG_GETGEN): per network namespace, +1 per commit.
    func generation() throws(BackendError) -> UInt32 {
        var generation: UInt32?
        try request(NFT_MSG_GETGEN, family: UInt8(AF_UNSPEC), dump: false) { message throws(BackendError) in
            for attribute in Attributes(message: message) where attribute.type == UInt16(NFTA_GEN_ID.rawValue) {
                generation = attribute.u32
            }
        }
        guard let generation else { throw BackendError(errno: EPROTO, message: "no generation id in the kernel's answer") }
        return generation
    }
}

/// A table as NFT_MSG_GETTABLE lists it.
struct ListedTable {
    var family: UInt8
    var name: String
    var flags: UInt32
    var comment: Comment?

    /// nftproxy's name for it; nil for a family or a name nftproxy never writes (inet, arp, …).
    var ref: TableRef? {
        guard let family = Family.allCases.first(where: { $0.nfproto == self.family }), let name = Name(name) else { return nil }
        return TableRef(family, name)
    }
}

/// Reads tables back into the IR with as few dumps as the kernel allows: per family one dump
/// each of tables and chains (neither can be filtered by table, so objects of other tables are
/// dropped on receipt, by their table name), one dump of sets per table (the kernel filters
/// those), then one dump per set for its elements and one per chain for its rules.
///
/// Rules are dumped chain by chain: a whole-table rule dump would cost O(rules²) in the kernel,
/// which re-walks the table from its first rule for every 32 KiB datagram of answer, while a
/// chain's dump walks only that chain (and the reader takes its datagrams in one recvmmsg).
struct TableReader {
    let socket: NetlinkSocket
    /// A second socket to the same namespace: when given, reading several tables uses two
    /// threads (the kernel's side of a dump runs in the reading thread).
    var second: NetlinkSocket? = nil

    /// Every table of `family` (AF_UNSPEC: of every family), in the kernel's order.
    func listTables(family: UInt8) throws(BackendError) -> [ListedTable] {
        var tables: [ListedTable] = []
        try socket.request(NFT_MSG_GETTABLE, family: family, dump: true) { message throws(BackendError) in
            tables.append(Self.parseTable(message))
        }
        return tables
    }

    /// The named tables that exist, in the order asked for.
    func read(_ refs: [TableRef]) throws(BackendError) -> [Table] {
        var found: [TableRef: Table] = [:]
        for family in Family.allCases {
            let wanted = Set(refs.filter { $0.family == family }.map(\.name.rawValue))
            guard !wanted.isEmpty else { continue }
            for table in try read(family, wanted) { found[TableRef(table.family, table.name)] = table }
        }
        return refs.compactMap { found[$0] }
    }

    private func read(_ family: Family, _ wanted: Set<String>) throws(BackendError) -> [Table] {
        var tables = TableIndex()
        for listed in try listTables(family: family.nfproto) where wanted.contains(listed.name) {
            guard let ref = listed.ref else { continue }
            guard listed.flags == 0 else {
                throw BackendError(errno: EPROTO, message: "table \(ref) has flags 0x\(String(listed.flags, radix: 16)) (dormant or owned), which nftproxy never sets")
            }
            tables.add(Table(family: family, name: ref.name, comment: listed.comment))
        }
        guard !tables.isEmpty else { return [] }

        // Sets per table: the kernel filters set dumps by table, so no other table's sets are read.
        // It cannot filter chain dumps: the family's chain headers come back and only ours are
        // kept. Each chain's rules are read once its header and its table's sets are known. With
        // a second socket, the chain dump runs beside the sets and elements, and both threads
        // then take chains to read from one queue (the sets side starts while the chain dump is
        // still under way), so that neither waits for the other; each decodes what it receives.
        let refs = tables.tables.indices.map { tables.ref($0) }
        let queue = ChainQueue()
        var chains: [[Chain]] = []
        var sets: [[NamedSet]] = []
        func dumpChains() throws(BackendError) {
            try queue.failing { () throws(BackendError) in
                defer { queue.close() }
                chains = try readChains(family, &tables, into: queue)
            }
        }
        func readSetsAndRules(_ reader: TableReader) throws(BackendError) -> [ChainQueue.Done] {
            var decoder = DumpDecoder()
            try queue.failing { () throws(BackendError) in
                sets = try refs.map { ref throws(BackendError) in try reader.readSetsWithElements(ref, decoder: &decoder) }
                queue.start(sets.map(SetCatalog.init))
            }
            return try reader.readRules(family, refs, from: queue, decoder: &decoder)
        }
        let done: [ChainQueue.Done]
        if let second, refs.count > 1 {
            let (first, last) = try inParallel(if: true) { () throws(BackendError) in
                try dumpChains()
                var decoder = DumpDecoder()
                return try readRules(family, refs, from: queue, decoder: &decoder)
            } and: { () throws(BackendError) in
                try readSetsAndRules(TableReader(socket: second))
            }
            done = first + last
        } else {
            // One thread: the chain dump ends before the sets are read, and the sets before any rule.
            try dumpChains()
            done = try readSetsAndRules(self)
        }
        for index in refs.indices {
            tables.tables[index].sets = sets[index]
            tables.tables[index].chains = chains[index]
        }
        for item in done { tables.tables[item.table].chains[item.chain].rules = item.rules }
        return tables.tables
    }

    /// The chain headers (no rules) of each table in `tables`, from one dump of the family; each
    /// is also added to `queue` as it arrives.
    private func readChains(_ family: Family, _ tables: inout TableIndex, into queue: ChainQueue) throws(BackendError) -> [[Chain]] {
        var chains = Array(repeating: [Chain](), count: tables.tables.count)
        try socket.request(NFT_MSG_GETCHAIN, family: family.nfproto, dump: true) { message throws(BackendError) in
            guard let index = tables.index(of: message, tableAttribute: UInt16(NFTA_CHAIN_TABLE.rawValue)) else { return }
            let chain = try Self.parseChain(message, ref: tables.ref(index))
            queue.add(ChainQueue.Item(table: index, chain: chains[index].count, name: chain.name))
            chains[index].append(chain)
        }
        return chains
    }

    /// The table's sets with their elements.
    private func readSetsWithElements(_ ref: TableRef, decoder: inout DumpDecoder) throws(BackendError) -> [NamedSet] {
        var sets = try readSets(ref)
        for index in sets.indices {
            sets[index].elements = try readElements(of: sets[index], ref: ref, decoder: &decoder)
        }
        return sets
    }

    /// The rules of the chains this thread takes from `queue`, one dump each, until it is empty.
    private func readRules(_ family: Family, _ refs: [TableRef], from queue: ChainQueue,
                           decoder: inout DumpDecoder) throws(BackendError) -> [ChainQueue.Done] {
        var done: [ChainQueue.Done] = []
        try queue.failing { () throws(BackendError) in
            while let (items, catalogs) = queue.take() {
                for item in items {
                    let ref = refs[item.table], sets = catalogs[item.table]
                    var rules: [Rule] = []
                    try socket.request(NFT_MSG_GETRULE, family: family.nfproto, dump: true,
                                       (UInt16(NFTA_RULE_TABLE.rawValue), ref.name.rawValue),
                                       (UInt16(NFTA_RULE_CHAIN.rawValue), item.name.rawValue)) { message throws(BackendError) in
                        rules.append(try decoder.rule(message, ref: ref, chain: item.name, sets: sets))
                    }
                    done.append(ChainQueue.Done(table: item.table, chain: item.chain, rules: rules))
                }
            }
        }
        return done
    }

    /// The table's sets and maps, without their elements; none when the table does not exist.
    /// The dump is filtered by table in the kernel (NFTA_SET_TABLE).
    func readSets(_ ref: TableRef) throws(BackendError) -> [NamedSet] {
        var sets: [NamedSet] = []
        do {
            try socket.request(NFT_MSG_GETSET, family: ref.family.nfproto, dump: true,
                               (UInt16(NFTA_SET_TABLE.rawValue), ref.name.rawValue)) { message throws(BackendError) in
                sets.append(try SetDecoder.set(message, table: ref))
            }
        } catch where error.errno == ENOENT {
            return []
        }
        return sets
    }

    /// Some of the table's sets and maps, without their elements, one NFT_MSG_GETSET each; one
    /// that does not exist is left out. A table can hold hundreds of sets (the node table's
    /// hairpin buckets), all of which a dump reads, where a change names a few.
    func readSets(_ ref: TableRef, named names: [Name]) throws(BackendError) -> [NamedSet] {
        var sets: [NamedSet] = []
        for name in names {
            do {
                try socket.request(NFT_MSG_GETSET, family: ref.family.nfproto, dump: false,
                                   (UInt16(NFTA_SET_TABLE.rawValue), ref.name.rawValue),
                                   (UInt16(NFTA_SET_NAME.rawValue), name.rawValue)) { message throws(BackendError) in
                    sets.append(try SetDecoder.set(message, table: ref))
                }
            } catch where error.errno == ENOENT {
                continue
            }
        }
        return sets
    }

    /// Elements come back in the set backend's (hash) order; they are returned sorted by key,
    /// the order the compiler produces and `nft list` prints.
    private func readElements(of set: NamedSet, ref: TableRef, decoder: inout DumpDecoder) throws(BackendError) -> [Element] {
        var elements: [(order: ElementOrder, element: Element)] = []
        try socket.request(NFT_MSG_GETSETELEM, family: ref.family.nfproto, dump: true,
                           (UInt16(NFTA_SET_ELEM_LIST_TABLE.rawValue), ref.name.rawValue),
                           (UInt16(NFTA_SET_ELEM_LIST_SET.rawValue), set.name.rawValue)) { message throws(BackendError) in
            for attribute in Attributes(message: message) where attribute.type == UInt16(NFTA_SET_ELEM_LIST_ELEMENTS.rawValue) {
                for element in attribute.nested {
                    elements.append(try decoder.element(element, set: set, ref: ref))
                }
            }
        }
        // Sort plain (key, position) pairs and gather once: sorting the elements themselves
        // would copy each (arrays, strings) at every move.
        var order = elements.indices.map { (key: elements[$0].order, index: $0) }
        order.sort { $0.key < $1.key }
        return order.map { elements[$0.index].element }
    }

    static func parseTable(_ message: UnsafePointer<nlmsghdr>) -> ListedTable {
        let family = UnsafeRawPointer(message).load(fromByteOffset: MemoryLayout<nlmsghdr>.size, as: nfgenmsg.self).nfgen_family
        var table = ListedTable(family: family, name: "", flags: 0)
        for attribute in Attributes(message: message) {
            switch Int(attribute.type) {
            case Int(NFTA_TABLE_NAME.rawValue): table.name = attribute.string
            case Int(NFTA_TABLE_FLAGS.rawValue): table.flags = attribute.u32
            case Int(NFTA_TABLE_USERDATA.rawValue):
                table.comment = Userdata(bytes: Array(attribute.value)).string(K.udataTableComment).map(Comment.init)
            default: break
            }
        }
        return table
    }

    static func parseChain(_ message: UnsafePointer<nlmsghdr>, ref: TableRef) throws(BackendError) -> Chain {
        var rawName = "?"
        var hookNumber: UInt32?
        var priority: Int32 = 0
        var typeName = "?"
        var policy = UInt32(NF_ACCEPT)
        for attribute in Attributes(message: message) {
            switch Int(attribute.type) {
            case Int(NFTA_CHAIN_NAME.rawValue): rawName = attribute.string
            case Int(NFTA_CHAIN_TYPE.rawValue): typeName = attribute.string
            case Int(NFTA_CHAIN_POLICY.rawValue): policy = attribute.u32
            case Int(NFTA_CHAIN_HOOK.rawValue):
                for field in attribute.nested {
                    switch Int(field.type) {
                    case Int(NFTA_HOOK_HOOKNUM.rawValue): hookNumber = field.u32
                    case Int(NFTA_HOOK_PRIORITY.rawValue): priority = Int32(bitPattern: field.u32)
                    default: break
                    }
                }
            default: break
            }
        }
        func unexpected(_ what: String) -> BackendError {
            BackendError(errno: EPROTO, message: "table \(ref): chain \(rawName) \(what), which nftproxy does not write (edited by hand or by another tool?)")
        }
        guard let name = Name(rawName) else { throw unexpected("has an invalid name") }
        guard let hookNumber else { return Chain(name) }
        guard let hook = [Hook.prerouting, .input, .forward, .output, .postrouting].first(where: { $0.number == hookNumber }) else {
            throw unexpected("hooks into \(hookNumber)")
        }
        guard let type = ChainType(rawValue: typeName) else { throw unexpected("has type \(typeName)") }
        guard policy == UInt32(NF_ACCEPT) else { throw unexpected("has policy drop") }
        return Chain(name, base: BaseChain(type: type, hook: hook, priority: PriorityName.priority(priority, type: type, hook: hook)))
    }
}

/// The tables being read, found by the table name attribute of each dumped object. Objects come
/// table by table, so the last table found is tried first.
private struct TableIndex {
    var tables: [Table] = []
    private var byName: [String: Int] = [:]
    private var last: Int?

    var isEmpty: Bool { tables.isEmpty }

    mutating func add(_ table: Table) {
        byName[table.name.rawValue] = tables.count
        tables.append(table)
    }

    func ref(_ index: Int) -> TableRef { TableRef(tables[index].family, tables[index].name) }

    /// The index of the table `message` belongs to; nil for another table's object.
    mutating func index(of message: UnsafePointer<nlmsghdr>, tableAttribute: UInt16) -> Int? {
        for attribute in Attributes(message: message) where attribute.type == tableAttribute {
            if let last, attribute.holds(tables[last].name.rawValue) { return last }
            last = byName[attribute.string]
            return last
        }
        return nil
    }
}

/// The chains whose rules are still to be read, shared by the reading threads. The chain dump
/// adds each chain as it arrives; once the sets are read (`start`), each thread takes the next
/// few chains whenever it is free, so that the sets side does not wait for the whole chain dump
/// and neither side waits for the other at the end. A thread that fails stops the others.
private final class ChainQueue: @unchecked Sendable {  // every stored property is guarded by `mutex`
    struct Item {
        var table: Int
        var chain: Int
        var name: Name
    }

    /// A chain read: its table's and its own position, and its rules.
    struct Done {
        var table: Int
        var chain: Int
        var rules: [Rule]
    }

    /// Chains a thread takes at once: few enough that the two threads end close together, enough
    /// that taking them costs nothing next to their dumps (hundreds of rules).
    static let batch = 32

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let changed = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var items: [Item] = []
    private var next = 0
    private var catalogs: [SetCatalog]?
    private var closed = false
    private var failed = false

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(changed, nil)
    }

    deinit {
        pthread_cond_destroy(changed)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        changed.deallocate()
    }

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    /// Adds a chain whose rules are to be read.
    func add(_ item: Item) {
        locked {
            items.append(item)
            if catalogs != nil { pthread_cond_signal(changed) }
        }
    }

    /// No chain will be added any more.
    func close() {
        locked {
            closed = true
            pthread_cond_broadcast(changed)
        }
    }

    /// The sets of each table are known: chains may be taken.
    func start(_ catalogs: [SetCatalog]) {
        locked {
            self.catalogs = catalogs
            pthread_cond_broadcast(changed)
        }
    }

    /// Runs `body`; if it throws, the other threads find the queue empty, and stop.
    func failing(_ body: () throws(BackendError) -> Void) throws(BackendError) {
        do {
            try body()
        } catch {
            locked {
                failed = true
                pthread_cond_broadcast(changed)
            }
            throw error
        }
    }

    /// The next chains to read and the tables' sets, waiting until the sets are known and a chain
    /// is there; nil once every chain is taken and none will be added, or after a failure.
    func take() -> (items: [Item], catalogs: [SetCatalog])? {
        locked {
            while !failed {
                if let catalogs, next < items.count {
                    let end = Swift.min(next + Self.batch, items.count)
                    defer { next = end }
                    // A copy: a slice would keep `items` shared, and the chain dump's next `add` would copy it all.
                    return (Array(items[next..<end]), catalogs)
                }
                if closed && next == items.count { return nil }
                pthread_cond_wait(changed, mutex)
            }
            return nil
        }
    }
}

/// NFT_MSG_NEWSET (as dumped) → `NamedSet`, refusing every attribute nftproxy does not write.
enum SetDecoder {
    static func set(_ message: UnsafePointer<nlmsghdr>, table ref: TableRef) throws(BackendError) -> NamedSet {
        var rawName = "?"
        var rawFlags: UInt32 = 0, keyType: UInt32 = 0, keyLength: UInt32 = 0, dataType: UInt32 = 0, dataLength: UInt32 = 0
        var timeout: UInt64 = 0
        var size: UInt32?
        var lengths: [UInt8] = []
        var comment: Comment?
        for attribute in Attributes(message: message) {
            switch Int(attribute.type) {
            case Int(NFTA_SET_NAME.rawValue): rawName = attribute.string
            case Int(NFTA_SET_FLAGS.rawValue): rawFlags = attribute.u32
            case Int(NFTA_SET_KEY_TYPE.rawValue): keyType = attribute.u32
            case Int(NFTA_SET_KEY_LEN.rawValue): keyLength = attribute.u32
            case Int(NFTA_SET_DATA_TYPE.rawValue): dataType = attribute.u32
            case Int(NFTA_SET_DATA_LEN.rawValue): dataLength = attribute.u32
            case Int(NFTA_SET_TIMEOUT.rawValue): timeout = attribute.u64
            case Int(NFTA_SET_USERDATA.rawValue):
                comment = Userdata(bytes: Array(attribute.value)).string(K.udataSetComment).map(Comment.init)
            case Int(NFTA_SET_DESC.rawValue):
                for field in attribute.nested {
                    switch Int(field.type) {
                    case Int(NFTA_SET_DESC_SIZE.rawValue): size = field.u32
                    case Int(NFTA_SET_DESC_CONCAT.rawValue):
                        for element in field.nested {
                            for length in element.nested where length.type == UInt16(NFTA_SET_FIELD_LEN.rawValue) {
                                lengths.append(UInt8(truncatingIfNeeded: length.u32))
                            }
                        }
                    default: break
                    }
                }
            default: break
            }
        }
        func unexpected(_ what: String) -> BackendError {
            BackendError(errno: EPROTO, message: "table \(ref): set \(rawName) \(what), which nftproxy does not write (edited by hand or by another tool?)")
        }
        guard let name = Name(rawName) else { throw unexpected("has an invalid name") }
        let known = K.setMap | K.setInterval | K.setConcat | K.setTimeout | K.setEval
        guard rawFlags & ~known == 0 else { throw unexpected("has flags 0x\(String(rawFlags, radix: 16))") }
        var flags: SetFlags = []
        if rawFlags & K.setInterval != 0 { flags.insert(.interval) }
        if rawFlags & K.setTimeout != 0 { flags.insert(.timeout) }
        if rawFlags & K.setEval != 0 { flags.insert(.dynamic) }
        guard let key = KeyType.types(id: keyType), Int(keyLength) == KeyType.length(key) else {
            throw unexpected("has a key type nftproxy does not use")
        }
        // nftproxy's interval sets are concatenations, which nft marks NFT_SET_CONCAT (pipapo) with each field's length.
        let concatenatedInterval = flags.contains(.interval) && key.count > 1
        guard (rawFlags & K.setConcat != 0) == concatenatedInterval, !flags.contains(.interval) || concatenatedInterval else {
            throw unexpected("has flags 0x\(String(rawFlags, radix: 16)) for a \(key.count)-field key")
        }
        if concatenatedInterval {
            guard lengths == key.map({ UInt8($0.length) }) else { throw unexpected("has field lengths \(lengths)") }
        }
        var isMap = false
        var data: [DataType] = []
        if rawFlags & K.setMap != 0 {
            if dataType == K.dataVerdict {
                isMap = true
            } else if let types = KeyType.types(id: dataType), Int(dataLength) == KeyType.length(types) {
                data = types
            } else {
                throw unexpected("maps to a type nftproxy does not use")
            }
        }
        if timeout != 0 { throw unexpected("has a default timeout") }
        // The kernel keeps a size only when one was given, except that a dynset binding a set
        // without one gives it 65535 (and `nft list` shows `size 65535`): that is the IR's nil,
        // the kernel's default, not drift. (So a dynamic set declared with size 65535 reads back without.)
        if size == 0 || (flags.contains(.dynamic) && size == 65535) { size = nil }
        return NamedSet(name, key: key, isMap: isMap, data: data, flags: flags, size: size, comment: comment)
    }
}

/// A base chain's numeric priority as a keyword plus an offset: the nearest keyword, preferring
/// the one nft pairs with the chain's type and hook on a tie (dstnat for nat prerouting/output,
/// srcnat for nat postrouting/input, filter otherwise). The kernel keeps only the number, so
/// `mangle + 50` reads back as `dstnat`.
enum PriorityName {
    static func priority(_ value: Int32, type: ChainType, hook: Hook) -> Priority {
        // Prefer the keywords nft pairs with this hook, then the rest.
        var preferred: [Priority.Keyword]
        switch (type, hook) {
        case (.nat, .prerouting), (.nat, .output): preferred = [.dstnat]
        case (.nat, .postrouting), (.nat, .input): preferred = [.srcnat]
        default: preferred = [.filter]
        }
        let all: [Priority.Keyword] = [.raw, .mangle, .dstnat, .filter, .security, .srcnat]
        preferred += all.filter { !preferred.contains($0) }
        var keyword = preferred[0]
        for candidate in preferred where abs(Int(candidate.value) - Int(value)) < abs(Int(keyword.value) - Int(value)) {
            keyword = candidate
        }
        return Priority(keyword, value - keyword.value)
    }
}

/// An element's key bytes as big-endian words, so elements sort without decoding: within one
/// set, the byte order of keys (fields in network order, zero padding at fixed places) is the
/// order of their `KeyValue`s.
struct ElementOrder: Comparable {
    private var head: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    private var tail: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    init(_ bytes: some Collection<UInt8>) {
        var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &words) { raw in
            let words = raw.bindMemory(to: UInt64.self)
            for (index, byte) in bytes.prefix(64).enumerated() {
                words[index / 8] |= UInt64(byte) << (56 - 8 * UInt64(index % 8))
            }
        }
        head = (words.0, words.1, words.2, words.3)
        tail = (words.4, words.5, words.6, words.7)
    }

    static func == (lhs: ElementOrder, rhs: ElementOrder) -> Bool { lhs.head == rhs.head && lhs.tail == rhs.tail }

    static func < (lhs: ElementOrder, rhs: ElementOrder) -> Bool {
        lhs.head != rhs.head ? lhs.head < rhs.head : lhs.tail < rhs.tail
    }
}
