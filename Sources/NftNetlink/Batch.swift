internal import CNftables
import NftIR
import ServiceModel
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One nfnetlink batch: BATCH_BEGIN (with the generation id), the object messages, BATCH_END,
/// written straight into 2 MiB pages and sent as one datagram over all of them. Every message
/// has its own sequence number, remembered with the index of the operation that produced it.
///
/// The pages are the only copy of the batch: no per-message objects are built, and nothing is
/// copied before sending.
final class Batch {
    private var pages: [UnsafeMutableRawBufferPointer] = []
    /// Bytes used in each finished page.
    private var pageLengths: [Int] = []
    private var writer: MessageWriter
    let beginSeq: UInt32
    private(set) var endSeq: UInt32 = 0
    private var nextSeq: UInt32
    /// Operation index for each sequence number from `beginSeq`; -1 for BEGIN and END.
    private var owners: [Int32] = []
    /// Where BATCH_BEGIN's NFNL_BATCH_GENID value sits, so it can be filled in just before sending.
    private let generationValue: UnsafeMutableRawPointer

    /// nft's page size.
    static let pageSize = 2 * 1024 * 1024
    /// Room every message starts with: more than the largest one (a set element message holds
    /// at most 64 KiB of elements, plus the one that did not fit and is taken back).
    static let messageRoom = 256 * 1024

    init(firstSeq: UInt32) {
        beginSeq = firstSeq
        nextSeq = firstSeq &+ 1
        owners = [-1]
        let page = UnsafeMutableRawBufferPointer.allocate(byteCount: Batch.pageSize, alignment: 16)
        pages = [page]
        var writer = MessageWriter(page.baseAddress!, capacity: page.count)
        writer.begin(type: UInt16(NFNL_MSG_BATCH_BEGIN), subsystem: false, flags: UInt16(NLM_F_REQUEST), seq: firstSeq,
                     family: UInt8(AF_UNSPEC), resourceID: UInt16(NFNL_SUBSYS_NFTABLES))
        writer.put(UInt16(NFNL_BATCH_GENID.rawValue), u32: 0)
        generationValue = writer.message + writer.end() - MemoryLayout<UInt32>.size
        self.writer = writer
    }

    deinit {
        for page in pages { page.deallocate() }
    }

    private func takeSeq(owner: Int) -> UInt32 {
        let seq = nextSeq
        nextSeq &+= 1
        owners.append(Int32(owner))
        return seq
    }

    /// Starts a new page unless the current one has room for any message.
    private func makeRoom() {
        guard writer.length + Batch.messageRoom > Batch.pageSize else { return }
        pageLengths.append(writer.length)
        let page = UnsafeMutableRawBufferPointer.allocate(byteCount: Batch.pageSize, alignment: 16)
        pages.append(page)
        writer = MessageWriter(page.baseAddress!, capacity: page.count)
    }

    /// Appends one object message; `payload` writes its attributes.
    func add(_ type: nf_tables_msg_types, family: Family, flags: Int32, owner: Int,
             _ payload: (inout MessageWriter) throws(LoweringError) -> Void) throws(LoweringError) {
        makeRoom()
        writer.begin(type: UInt16(type.rawValue), flags: UInt16(flags | NLM_F_REQUEST), seq: takeSeq(owner: owner), family: family.nfproto)
        try payload(&writer)
        writer.end()
        guard !writer.overflowed else { throw LoweringError(message: "a netlink message larger than \(Batch.messageRoom) bytes") }
    }

    /// Closes the batch. NLM_F_ACK on BATCH_END makes kernels ≥ 6.10 confirm the commit.
    func end() {
        makeRoom()
        endSeq = takeSeq(owner: -1)
        writer.begin(type: UInt16(NFNL_MSG_BATCH_END), subsystem: false, flags: UInt16(NLM_F_REQUEST | NLM_F_ACK), seq: endSeq,
                     family: UInt8(AF_UNSPEC), resourceID: UInt16(NFNL_SUBSYS_NFTABLES))
        writer.end()
    }

    var messageCount: Int { owners.count }

    /// Pages in use so far (2 MiB each).
    var pageCount: Int { pages.count }

    func owner(of seq: UInt32) -> Int? {
        let index = Int(seq &- beginSeq)
        guard index >= 0, index < owners.count, owners[index] >= 0 else { return nil }
        return Int(owners[index])
    }

    func setGeneration(_ generation: UInt32) {
        generationValue.storeBytes(of: generation.bigEndian, as: UInt32.self)
    }

    /// The pages' used bytes, in order.
    private var chunks: [UnsafeRawBufferPointer] {
        pages.indices.map { index in
            UnsafeRawBufferPointer(start: pages[index].baseAddress, count: index < pageLengths.count ? pageLengths[index] : writer.length)
        }
    }

    /// The batch as it would be sent, one byte array per netlink message (BATCH_BEGIN and
    /// BATCH_END included), to compare with what `nft --debug=mnl` sends.
    var messages: [[UInt8]] {
        var out: [[UInt8]] = []
        forEachMessage { header, length in
            out.append(Array(UnsafeRawBufferPointer(start: header, count: length)))
            return true
        }
        return out
    }

    /// Walks the messages in the pages, in order, while `body` returns true.
    private func forEachMessage(_ body: (UnsafePointer<nlmsghdr>, Int) -> Bool) {
        for chunk in chunks {
            var offset = 0
            while offset + MemoryLayout<nlmsghdr>.size <= chunk.count {
                let header = chunk.baseAddress!.advanced(by: offset).assumingMemoryBound(to: nlmsghdr.self)
                let length = Int(header.pointee.nlmsg_len)
                guard length >= MemoryLayout<nlmsghdr>.size, offset + length <= chunk.count else { break }
                guard body(header, length) else { return }
                offset += (length + 3) & ~3
            }
        }
    }

    /// The message sent with sequence number `seq`, found by walking the pages (for a refused
    /// message, once).
    func message(_ seq: UInt32) -> UnsafePointer<nlmsghdr>? {
        var found: UnsafePointer<nlmsghdr>?
        forEachMessage { header, _ in
            if header.pointee.nlmsg_seq == seq { found = header }
            return found == nil
        }
        return found
    }

    /// Sends the whole batch in one sendmsg over all its pages.
    func send(on socket: NetlinkSocket) throws(BackendError) -> Int {
        let chunks = self.chunks
        let iovecs = UnsafeMutableBufferPointer<iovec>.allocate(capacity: chunks.count)
        defer { iovecs.deallocate() }
        for (index, chunk) in chunks.enumerated() {
            iovecs[index] = iovec(iov_base: UnsafeMutableRawPointer(mutating: chunk.baseAddress), iov_len: chunk.count)
        }
        let bytes = chunks.reduce(0) { $0 + $1.count }
        socket.setBuffer(send: true, bytes: bytes + 64 * 1024)
        try socket.send(iovecs)
        return bytes
    }
}

/// Writes operations into a batch in order, with the set definitions of the table at hand.
struct BatchWriter {
    /// How often a consuming apply hands freed memory back: every 32 pages (64 MiB) of batch.
    static let trimPages = 32

    let batch: Batch
    let catalogs: [TableRef: SetCatalog]
    private var setID: UInt32 = 1
    private var table: TableRef?
    private var sets = SetCatalog()

    init(batch: Batch, catalogs: [TableRef: SetCatalog]) {
        self.batch = batch
        self.catalogs = catalogs
    }

    /// Operations come table by table: the catalog is looked up when the table changes.
    mutating func add(_ operation: Operation, index: Int) throws(BackendError) {
        let ref = operation.table
        if ref != table {
            table = ref
            sets = catalogs[ref] ?? SetCatalog()
        }
        do {
            try Writer.add(operation, index: index, to: batch, nextSetID: &setID, sets: sets)
        } catch {
            throw BackendError(errno: EINVAL, operation: operation, message: "cannot express this in netlink: \(error.message)")
        }
    }
}

/// Operation → netlink messages, each attribute in the order nft 1.0.6 (libnftnl 1.2.4) sends it.
enum Writer {
    /// `sets`: the definitions of the sets of the operation's table, for rules that look them up
    /// and elements that go in or out of them (see `SetCatalog`).
    static func add(_ operation: Operation, index: Int, to batch: Batch, nextSetID: inout UInt32, sets: SetCatalog) throws(LoweringError) {
        let ref = operation.table
        let family = ref.family
        let table = ref.name.rawValue
        switch operation {
        case .addTable(_, let comment):
            try batch.add(NFT_MSG_NEWTABLE, family: family, flags: NLM_F_CREATE, owner: index) { message throws(LoweringError) in
                message.put(A.tableName, string: table)
                if let comment { message.put(A.tableUserdata, comment: comment, udataType: K.udataTableComment) }
            }
        case .deleteTable:
            try batch.add(NFT_MSG_DELTABLE, family: family, flags: 0, owner: index) { message throws(LoweringError) in
                message.put(A.tableName, string: table)
            }
        case .addSet(_, let set):
            guard !set.key.isEmpty, set.key.count <= 5 else { throw LoweringError(message: "a set key has 1 to 5 fields") }
            guard KeyType.length(set.key) <= 64 else { throw LoweringError(message: "a set key longer than 64 bytes") }
            guard set.data.count <= 5, KeyType.length(set.data) <= 64 else { throw LoweringError(message: "map data has 1 to 5 fields, at most 64 bytes") }
            guard !(set.isMap && !set.data.isEmpty) else { throw LoweringError(message: "a map has either verdicts or data") }
            // nft sends single-field interval sets as rbtree ranges (start and end elements), which nftproxy does not write.
            guard !set.flags.contains(.interval) || set.key.count > 1 else {
                throw LoweringError(message: "an interval set needs a concatenated key")
            }
            let id = nextSetID
            nextSetID += 1
            try batch.add(NFT_MSG_NEWSET, family: family, flags: NLM_F_CREATE, owner: index) { message throws(LoweringError) in
                putSet(set, table: table, id: id, into: &message)
            }
        case .deleteSet(_, let name):
            try batch.add(NFT_MSG_DELSET, family: family, flags: 0, owner: index) { message throws(LoweringError) in
                message.put(A.setTable, string: table)
                message.put(A.setName, string: name.rawValue)
            }
        case .addChain(_, let name, let base):
            try batch.add(NFT_MSG_NEWCHAIN, family: family, flags: NLM_F_CREATE, owner: index) { message throws(LoweringError) in
                message.put(A.chainTable, string: table)
                message.put(A.chainName, string: name.rawValue)
                if let base {
                    let hook = message.beginNested(A.chainHook)
                    message.put(A.hookNumber, u32: base.hook.number)
                    message.put(A.hookPriority, u32: UInt32(bitPattern: base.priority.value))
                    message.endNested(hook)
                    message.put(A.chainPolicy, u32: UInt32(NF_ACCEPT))
                    message.put(A.chainType, string: base.type.rawValue)
                }
            }
        case .flushChain(_, let name):
            // DELRULE with the chain and no handle empties that chain (never omit the chain:
            // without it the kernel flushes every chain of the table).
            try batch.add(NFT_MSG_DELRULE, family: family, flags: 0, owner: index) { message throws(LoweringError) in
                message.put(A.ruleTable, string: table)
                message.put(A.ruleChain, string: name.rawValue)
            }
        case .deleteChain(_, let name):
            try batch.add(NFT_MSG_DELCHAIN, family: family, flags: 0, owner: index) { message throws(LoweringError) in
                message.put(A.chainTable, string: table)
                message.put(A.chainName, string: name.rawValue)
            }
        case .addRule(_, let chainName, let rule):
            // The expressions go straight into the message (see `ExpressionSink`).
            try batch.add(NFT_MSG_NEWRULE, family: family, flags: NLM_F_CREATE | NLM_F_APPEND, owner: index) { message throws(LoweringError) in
                message.put(A.ruleTable, string: table)
                message.put(A.ruleChain, string: chainName.rawValue)
                if let comment = rule.comment { message.put(A.ruleUserdata, comment: comment, udataType: K.udataRuleComment) }
                let list = message.beginNested(A.ruleExpressions)
                try Lowering.rule(rule, family: family, sets: sets, into: &message)
                message.endNested(list)
            }
        case .addElements(_, let setName, let elements):
            try addElements(elements, withData: true, set: setName, shape: sets[setName], ref: ref, type: NFT_MSG_NEWSETELEM,
                            flags: NLM_F_CREATE, index: index, batch: batch)
        case .deleteElements(_, let setName, let elements):
            try addElements(elements, withData: false, set: setName, shape: sets[setName], ref: ref, type: NFT_MSG_DELSETELEM,
                            flags: 0, index: index, batch: batch)
        }
    }

    /// The NEWSET attributes nft 1.0.6 sends (`nft --debug=mnl`): the flags (a concatenated
    /// interval set also gets NFT_SET_CONCAT, selecting pipapo), the key and data types, the
    /// batch-local id, NFTA_SET_DESC with the size and, for pipapo, each key field's unpadded
    /// length, and the userdata `nft list` reads.
    static func putSet(_ set: NamedSet, table: String, id: UInt32, into message: inout MessageWriter) {
        message.put(A.setTable, string: table)
        message.put(A.setName, string: set.name.rawValue)
        var flags: UInt32 = set.isMap || !set.data.isEmpty ? K.setMap : 0
        if set.flags.contains(.interval) { flags |= K.setInterval | (set.key.count > 1 ? K.setConcat : 0) }
        if set.flags.contains(.timeout) { flags |= K.setTimeout }
        if set.flags.contains(.dynamic) { flags |= K.setEval }
        message.put(A.setFlags, u32: flags)
        message.put(A.setKeyType, u32: KeyType.id(set.key))
        message.put(A.setKeyLength, u32: UInt32(KeyType.length(set.key)))
        if set.isMap {
            message.put(A.setDataType, u32: K.dataVerdict)
            message.put(A.setDataLength, u32: 0)
        } else if !set.data.isEmpty {
            message.put(A.setDataType, u32: KeyType.id(set.data))
            message.put(A.setDataLength, u32: UInt32(KeyType.length(set.data)))
        }
        message.put(A.setID, u32: id)
        if set.size != nil || set.isConcatenatedInterval {
            let description = message.beginNested(A.setDescription)
            if let size = set.size { message.put(A.setDescriptionSize, u32: size) }
            if set.isConcatenatedInterval {
                let concat = message.beginNested(A.setDescriptionConcat)
                for field in set.key {
                    let element = message.beginNested(A.listElement)
                    message.put(A.setFieldLength, u32: UInt32(field.length))
                    message.endNested(element)
                }
                message.endNested(concat)
            }
            message.endNested(description)
        }
        message.put(A.setUserdata, bytes: Userdata.set(set).bytes)
    }

    /// Element messages, each holding as many elements as fit the 64 KiB NFTA_SET_ELEM_LIST_ELEMENTS
    /// attribute (numbered from 1 in each message, as libnftnl does). An element of a
    /// concatenated interval set carries its inclusive end key, also when it is deleted; a deleted
    /// element carries only its key(s).
    private static func addElements(_ elements: [Element], withData: Bool, set setName: Name, shape: NamedSet?, ref: TableRef,
                                    type: nf_tables_msg_types, flags: Int32, index: Int, batch: Batch) throws(LoweringError) {
        let ranges = shape?.isConcatenatedInterval ?? false
        var next = elements.startIndex
        while next < elements.endIndex {
            try batch.add(type, family: ref.family, flags: flags, owner: index) { message throws(LoweringError) in
                // nft writes NFTA_SET_ELEM_LIST_TABLE, then NFTA_SET_ELEM_LIST_SET.
                message.put(A.elementListTable, string: ref.name.rawValue)
                message.put(A.elementListSet, string: setName.rawValue)
                let list = message.beginNested(A.elementListElements)
                var number: UInt16 = 0
                while next < elements.endIndex {
                    let before = message.length
                    number += 1
                    let nest = message.beginNested(number)
                    try putElement(elements[next], ranges: ranges, withData: withData, into: &message)
                    message.endNested(nest)
                    if message.nestedLength(list) > 0xffff {
                        guard number > 1 else { throw LoweringError(message: "a set element larger than 64 KiB") }
                        message.truncate(to: before)
                        break
                    }
                    next += 1
                }
                message.endNested(list)
            }
        }
    }

    private static func putElement(_ element: Element, ranges: Bool, withData: Bool, into message: inout MessageWriter) throws(LoweringError) {
        let key = element.key
        if ranges {
            let count = try ElementKey.length(key)
            message.putData(A.elementKey, count: count) { ElementKey.write(key, last: false, into: $0) }
            message.putData(A.elementKeyEnd, count: count) { ElementKey.write(key, last: true, into: $0) }
        } else {
            message.putData(A.elementKey, count: try ElementKey.length(exact: key)) { ElementKey.write(key, last: false, into: $0) }
        }
        guard withData else { return }
        if let verdict = element.verdict {
            let (code, chain) = Lowering.verdictCode(verdict)
            message.putVerdict(A.elementData, code: code, chain: chain)
        }
        let data = element.data
        if !data.isEmpty { message.putData(A.elementData, count: try ElementKey.length(exact: data)) { ElementKey.write(data, last: false, into: $0) } }
        if let comment = element.comment { message.put(A.elementUserdata, comment: comment, udataType: K.udataSetElemComment) }
    }
}

/// The NFTA_* attribute numbers the writer uses, as UInt16.
enum A {
    static func id<T: RawRepresentable>(_ attribute: T) -> UInt16 where T.RawValue: BinaryInteger { UInt16(attribute.rawValue) }

    static let listElement = id(NFTA_LIST_ELEM)
    static let dataValue = id(NFTA_DATA_VALUE)
    static let dataVerdict = id(NFTA_DATA_VERDICT)
    static let verdictCode = id(NFTA_VERDICT_CODE)
    static let verdictChain = id(NFTA_VERDICT_CHAIN)
    static let tableName = id(NFTA_TABLE_NAME)
    static let tableUserdata = id(NFTA_TABLE_USERDATA)
    static let chainTable = id(NFTA_CHAIN_TABLE)
    static let chainName = id(NFTA_CHAIN_NAME)
    static let chainHook = id(NFTA_CHAIN_HOOK)
    static let chainPolicy = id(NFTA_CHAIN_POLICY)
    static let chainType = id(NFTA_CHAIN_TYPE)
    static let hookNumber = id(NFTA_HOOK_HOOKNUM)
    static let hookPriority = id(NFTA_HOOK_PRIORITY)
    static let ruleTable = id(NFTA_RULE_TABLE)
    static let ruleChain = id(NFTA_RULE_CHAIN)
    static let ruleExpressions = id(NFTA_RULE_EXPRESSIONS)
    static let ruleUserdata = id(NFTA_RULE_USERDATA)
    static let setTable = id(NFTA_SET_TABLE)
    static let setName = id(NFTA_SET_NAME)
    static let setFlags = id(NFTA_SET_FLAGS)
    static let setKeyType = id(NFTA_SET_KEY_TYPE)
    static let setKeyLength = id(NFTA_SET_KEY_LEN)
    static let setDataType = id(NFTA_SET_DATA_TYPE)
    static let setDataLength = id(NFTA_SET_DATA_LEN)
    static let setID = id(NFTA_SET_ID)
    static let setDescription = id(NFTA_SET_DESC)
    static let setDescriptionSize = id(NFTA_SET_DESC_SIZE)
    static let setDescriptionConcat = id(NFTA_SET_DESC_CONCAT)
    static let setFieldLength = id(NFTA_SET_FIELD_LEN)
    static let setUserdata = id(NFTA_SET_USERDATA)
    static let elementListTable = id(NFTA_SET_ELEM_LIST_TABLE)
    static let elementListSet = id(NFTA_SET_ELEM_LIST_SET)
    static let elementListElements = id(NFTA_SET_ELEM_LIST_ELEMENTS)
    static let elementKey = id(NFTA_SET_ELEM_KEY)
    static let elementKeyEnd = id(NFTA_SET_ELEM_KEY_END)
    static let elementData = id(NFTA_SET_ELEM_DATA)
    static let elementUserdata = id(NFTA_SET_ELEM_USERDATA)
}
