internal import CNftables
import NftIR
import ServiceModel
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One nfnetlink batch: BATCH_BEGIN (with the generation id), the object messages, BATCH_END,
/// laid out in libnftnl's chained pages and sent as one datagram. Every message has its own
/// sequence number, remembered with the index of the operation that produced it.
final class Batch {
    private let batch: OpaquePointer  // struct nftnl_batch *
    let beginSeq: UInt32
    private(set) var endSeq: UInt32 = 0
    private var nextSeq: UInt32
    /// Operation index for each sequence number from `beginSeq`; -1 for BEGIN and END.
    private var owners: [Int32] = []
    /// Where BATCH_BEGIN's NFNL_BATCH_GENID value sits, so it can be filled in just before sending.
    private var generationValue: UnsafeMutableRawPointer?
    /// The start of the page being filled, to notice when libnftnl starts a new one.
    private var pageStart: UnsafeMutableRawPointer?

    /// nft's page size; a page is cut once a message ends past it.
    static let pageSize: UInt32 = 2 * 1024 * 1024
    /// Room past the page for the message that crosses it: a set element message is at most
    /// 64 KiB plus the one element libnftnl trims off again.
    static let pageOverrun: UInt32 = 256 * 1024

    init(firstSeq: UInt32) throws(BackendError) {
        guard let batch = nftnl_batch_alloc(Batch.pageSize, Batch.pageOverrun) else {
            throw BackendError(errno: ENOMEM, message: "cannot allocate a netlink batch")
        }
        self.batch = batch
        beginSeq = firstSeq
        nextSeq = firstSeq
        clearNewPage()
        guard let begin = nftnl_batch_begin(buffer, takeSeq(owner: -1)) else {
            throw BackendError(errno: ENOMEM, message: "cannot start the netlink batch")
        }
        mnl_attr_put_u32(begin, UInt16(NFNL_BATCH_GENID.rawValue), 0)
        generationValue = UnsafeMutableRawPointer(begin) + Int(begin.pointee.nlmsg_len) - MemoryLayout<UInt32>.size
        try update()
    }

    deinit { nftnl_batch_free(batch) }

    private var buffer: UnsafeMutablePointer<CChar> {
        nftnl_batch_buffer(batch).assumingMemoryBound(to: CChar.self)
    }

    private func takeSeq(owner: Int) -> UInt32 {
        let seq = nextSeq
        nextSeq &+= 1
        owners.append(Int32(owner))
        return seq
    }

    private func update() throws(BackendError) {
        guard nftnl_batch_update(batch) >= 0 else {
            throw BackendError(errno: ENOMEM, message: "cannot grow the netlink batch")
        }
        clearNewPage()
    }

    /// Zeroes the rest of a page when libnftnl starts one. libmnl 1.0.4 leaves the padding after
    /// an attribute as it finds it, so a page of recycled heap would send stale bytes there; nft's
    /// pages come zeroed from mmap, and so its messages are reproducible byte for byte.
    private func clearNewPage() {
        let used = Int(nftnl_batch_buffer_len(batch))
        let tail = nftnl_batch_buffer(batch)!
        let start = tail - used
        guard start != pageStart else { return }
        pageStart = start
        memset(tail, 0, Int(Batch.pageSize + Batch.pageOverrun) - used)
    }

    /// Appends one object message; `payload` fills in its attributes.
    func add(_ type: nf_tables_msg_types, family: Family, flags: Int32, owner: Int,
             _ payload: (UnsafeMutablePointer<nlmsghdr>) throws(LoweringError) -> Void) throws(LoweringError) {
        guard let header = nftnl_nlmsg_build_hdr(buffer, UInt16(type.rawValue), UInt16(family.nfproto), UInt16(flags | NLM_F_REQUEST), takeSeq(owner: owner)) else {
            throw LoweringError(message: "cannot add a message to the netlink batch")
        }
        try payload(header)
        guard header.pointee.nlmsg_len <= Batch.pageOverrun else {
            throw LoweringError(message: "a netlink message of \(header.pointee.nlmsg_len) bytes is too large")
        }
        guard nftnl_batch_update(batch) >= 0 else { throw LoweringError(message: "cannot grow the netlink batch") }
        clearNewPage()
    }

    /// Closes the batch. NLM_F_ACK on BATCH_END makes kernels ≥ 6.10 confirm the commit.
    func end() throws(BackendError) {
        endSeq = takeSeq(owner: -1)
        guard let end = nftnl_batch_end(buffer, endSeq) else {
            throw BackendError(errno: ENOMEM, message: "cannot close the netlink batch")
        }
        end.pointee.nlmsg_flags |= UInt16(NLM_F_ACK)
        try update()
    }

    var messageCount: Int { owners.count }

    func owner(of seq: UInt32) -> Int? {
        let index = Int(seq &- beginSeq)
        guard index >= 0, index < owners.count, owners[index] >= 0 else { return nil }
        return Int(owners[index])
    }

    func setGeneration(_ generation: UInt32) {
        generationValue?.storeBytes(of: generation.bigEndian, as: UInt32.self)
    }

    /// The batch as it would be sent, one byte array per netlink message (BATCH_BEGIN and
    /// BATCH_END included), to compare with what `nft --debug=mnl` sends.
    var messages: [[UInt8]] {
        let count = Int(nftnl_batch_iovec_len(batch))
        let iovecs = UnsafeMutableBufferPointer<iovec>.allocate(capacity: max(count, 1))
        defer { iovecs.deallocate() }
        nftnl_batch_iovec(batch, iovecs.baseAddress, UInt32(count))
        var bytes: [UInt8] = []
        for vector in iovecs.prefix(count) {
            bytes += UnsafeRawBufferPointer(start: vector.iov_base, count: vector.iov_len)
        }
        var out: [[UInt8]] = []
        var offset = 0
        while offset + MemoryLayout<nlmsghdr>.size <= bytes.count {
            let length = Int(bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self) })
            guard length >= MemoryLayout<nlmsghdr>.size, offset + length <= bytes.count else { break }
            out.append(Array(bytes[offset..<(offset + length)]))
            offset += (length + 3) & ~3
        }
        return out
    }

    /// Sends the whole batch in one sendmsg over all its pages.
    func send(on socket: NetlinkSocket) throws(BackendError) -> Int {
        let count = Int(nftnl_batch_iovec_len(batch))
        let iovecs = UnsafeMutableBufferPointer<iovec>.allocate(capacity: max(count, 1))
        defer { iovecs.deallocate() }
        nftnl_batch_iovec(batch, iovecs.baseAddress, UInt32(count))
        let vectors = UnsafeMutableBufferPointer(rebasing: iovecs[0..<count])
        let bytes = vectors.reduce(0) { $0 + $1.iov_len }
        socket.setBuffer(send: true, bytes: bytes + 64 * 1024)
        try socket.send(vectors)
        return bytes
    }
}

/// Operation → netlink messages.
enum Writer {
    /// `sets`: the definitions of the sets of the operation's table, for rules that look them up
    /// and elements that go in or out of them (see `SetCatalog`).
    static func add(_ operation: Operation, index: Int, to batch: Batch, nextSetID: inout UInt32, sets: SetCatalog) throws(LoweringError) {
        let ref = operation.table
        let family = ref.family
        switch operation {
        case .addTable(_, let comment):
            try batch.add(NFT_MSG_NEWTABLE, family: family, flags: NLM_F_CREATE, owner: index) { header throws(LoweringError) in
                let table = try NftnlTable()
                try check(nftnl_table_set_str(table.pointer, Attr.id(NFTNL_TABLE_NAME), ref.name.rawValue), "table name")
                if let data = Userdata.comment(comment, type: K.udataTableComment) {
                    try check(data.bytes.withUnsafeBytes { nftnl_table_set_data(table.pointer, Attr.id(NFTNL_TABLE_USERDATA), $0.baseAddress, UInt32($0.count)) }, "table comment")
                }
                nftnl_table_nlmsg_build_payload(header, table.pointer)
            }
        case .deleteTable:
            try batch.add(NFT_MSG_DELTABLE, family: family, flags: 0, owner: index) { header throws(LoweringError) in
                let table = try NftnlTable()
                try check(nftnl_table_set_str(table.pointer, Attr.id(NFTNL_TABLE_NAME), ref.name.rawValue), "table name")
                nftnl_table_nlmsg_build_payload(header, table.pointer)
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
            try batch.add(NFT_MSG_NEWSET, family: family, flags: NLM_F_CREATE, owner: index) { header throws(LoweringError) in
                let object = try setObject(set, table: ref, id: id)
                nftnl_set_nlmsg_build_payload(header, object.pointer)
            }
        case .deleteSet(_, let name):
            try batch.add(NFT_MSG_DELSET, family: family, flags: 0, owner: index) { header throws(LoweringError) in
                let object = try NftnlSet()
                try check(nftnl_set_set_str(object.pointer, Attr.id(NFTNL_SET_TABLE), ref.name.rawValue), "set table")
                try check(nftnl_set_set_str(object.pointer, Attr.id(NFTNL_SET_NAME), name.rawValue), "set name")
                nftnl_set_nlmsg_build_payload(header, object.pointer)
            }
        case .addChain(_, let name, let base):
            try batch.add(NFT_MSG_NEWCHAIN, family: family, flags: NLM_F_CREATE, owner: index) { header throws(LoweringError) in
                let chain = try NftnlChain()
                let c = chain.pointer
                try check(nftnl_chain_set_str(c, Attr.id(NFTNL_CHAIN_TABLE), ref.name.rawValue), "chain table")
                try check(nftnl_chain_set_str(c, Attr.id(NFTNL_CHAIN_NAME), name.rawValue), "chain name")
                if let base {
                    nftnl_chain_set_u32(c, Attr.id(NFTNL_CHAIN_HOOKNUM), base.hook.number)
                    nftnl_chain_set_s32(c, Attr.id(NFTNL_CHAIN_PRIO), base.priority.value)
                    try check(nftnl_chain_set_str(c, Attr.id(NFTNL_CHAIN_TYPE), base.type.rawValue), "chain type")
                    nftnl_chain_set_u32(c, Attr.id(NFTNL_CHAIN_POLICY), UInt32(NF_ACCEPT))
                }
                nftnl_chain_nlmsg_build_payload(header, c)
            }
        case .flushChain(_, let name):
            // DELRULE with the chain and no handle empties that chain (never omit the chain:
            // without it the kernel flushes every chain of the table).
            try batch.add(NFT_MSG_DELRULE, family: family, flags: 0, owner: index) { header throws(LoweringError) in
                let rule = try NftnlRule()
                try check(nftnl_rule_set_str(rule.pointer, Attr.id(NFTNL_RULE_TABLE), ref.name.rawValue), "rule table")
                try check(nftnl_rule_set_str(rule.pointer, Attr.id(NFTNL_RULE_CHAIN), name.rawValue), "rule chain")
                nftnl_rule_nlmsg_build_payload(header, rule.pointer)
            }
        case .deleteChain(_, let name):
            try batch.add(NFT_MSG_DELCHAIN, family: family, flags: 0, owner: index) { header throws(LoweringError) in
                let chain = try NftnlChain()
                try check(nftnl_chain_set_str(chain.pointer, Attr.id(NFTNL_CHAIN_TABLE), ref.name.rawValue), "chain table")
                try check(nftnl_chain_set_str(chain.pointer, Attr.id(NFTNL_CHAIN_NAME), name.rawValue), "chain name")
                nftnl_chain_nlmsg_build_payload(header, chain.pointer)
            }
        case .addRule(_, let chainName, let rule):
            let expressions = try Lowering.rule(rule, family: family, sets: sets)
            try batch.add(NFT_MSG_NEWRULE, family: family, flags: NLM_F_CREATE | NLM_F_APPEND, owner: index) { header throws(LoweringError) in
                let object = try NftnlRule()
                let r = object.pointer
                try check(nftnl_rule_set_str(r, Attr.id(NFTNL_RULE_TABLE), ref.name.rawValue), "rule table")
                try check(nftnl_rule_set_str(r, Attr.id(NFTNL_RULE_CHAIN), chainName.rawValue), "rule chain")
                for expression in expressions {
                    nftnl_rule_add_expr(r, try ExpressionCodec.make(expression))
                }
                if let data = Userdata.comment(rule.comment, type: K.udataRuleComment) {
                    try check(data.bytes.withUnsafeBytes { nftnl_rule_set_data(r, Attr.id(NFTNL_RULE_USERDATA), $0.baseAddress, UInt32($0.count)) }, "rule comment")
                }
                nftnl_rule_nlmsg_build_payload(header, r)
            }
        case .addElements(_, let setName, let elements):
            try addElements(elements, withData: true, set: setName, shape: sets[setName], ref: ref, type: NFT_MSG_NEWSETELEM,
                            flags: NLM_F_CREATE, index: index, batch: batch)
        case .deleteElements(_, let setName, let elements):
            try addElements(elements, withData: false, set: setName, shape: sets[setName], ref: ref, type: NFT_MSG_DELSETELEM,
                            flags: 0, index: index, batch: batch)
        }
    }

    /// The NEWSET object, with the attributes nft 1.0.6 sends (`nft --debug=mnl`): the flags
    /// (a concatenated interval set also gets NFT_SET_CONCAT, selecting pipapo), the key and data
    /// types, the batch-local id, NFTA_SET_DESC with the size and, for pipapo, each key field's
    /// unpadded length, and the userdata `nft list` reads.
    static func setObject(_ set: NamedSet, table ref: TableRef, id: UInt32) throws(LoweringError) -> NftnlSet {
        let object = try NftnlSet()
        let s = object.pointer
        try check(nftnl_set_set_str(s, Attr.id(NFTNL_SET_TABLE), ref.name.rawValue), "set table")
        try check(nftnl_set_set_str(s, Attr.id(NFTNL_SET_NAME), set.name.rawValue), "set name")
        var flags: UInt32 = set.isMap || !set.data.isEmpty ? K.setMap : 0
        if set.flags.contains(.interval) { flags |= K.setInterval | (set.key.count > 1 ? K.setConcat : 0) }
        if set.flags.contains(.timeout) { flags |= K.setTimeout }
        if set.flags.contains(.dynamic) { flags |= K.setEval }
        nftnl_set_set_u32(s, Attr.id(NFTNL_SET_FLAGS), flags)
        nftnl_set_set_u32(s, Attr.id(NFTNL_SET_KEY_TYPE), KeyType.id(set.key))
        nftnl_set_set_u32(s, Attr.id(NFTNL_SET_KEY_LEN), UInt32(KeyType.length(set.key)))
        if set.isMap {
            nftnl_set_set_u32(s, Attr.id(NFTNL_SET_DATA_TYPE), K.dataVerdict)
            nftnl_set_set_u32(s, Attr.id(NFTNL_SET_DATA_LEN), 0)
        } else if !set.data.isEmpty {
            nftnl_set_set_u32(s, Attr.id(NFTNL_SET_DATA_TYPE), KeyType.id(set.data))
            nftnl_set_set_u32(s, Attr.id(NFTNL_SET_DATA_LEN), UInt32(KeyType.length(set.data)))
        }
        nftnl_set_set_u32(s, Attr.id(NFTNL_SET_ID), id)
        if let size = set.size { nftnl_set_set_u32(s, Attr.id(NFTNL_SET_DESC_SIZE), size) }
        if set.isConcatenatedInterval {
            // libnftnl counts the fields up to the first zero length.
            let lengths = set.key.map { UInt8($0.length) } + [0]
            try check(lengths.withUnsafeBytes { nftnl_set_set_data(s, Attr.id(NFTNL_SET_DESC_CONCAT), $0.baseAddress, UInt32($0.count)) }, "set field lengths")
        }
        let data = Userdata.set(set)
        try check(data.bytes.withUnsafeBytes { nftnl_set_set_data(s, Attr.id(NFTNL_SET_USERDATA), $0.baseAddress, UInt32($0.count)) }, "set userdata")
        return object
    }

    /// Element messages, each holding as many elements as fit the 64 KiB NFTA_SET_ELEM_LIST_ELEMENTS
    /// attribute. An element of a concatenated interval set carries its inclusive end key, also
    /// when it is deleted; a deleted element carries only its key(s).
    private static func addElements(_ elements: [Element], withData: Bool, set setName: Name, shape: NamedSet?, ref: TableRef,
                                    type: nf_tables_msg_types, flags: Int32, index: Int, batch: Batch) throws(LoweringError) {
        guard !elements.isEmpty else { return }
        // The carrier set has no table or name: libnftnl would write them set first, nft writes
        // NFTA_SET_ELEM_LIST_TABLE, then NFTA_SET_ELEM_LIST_SET (each message, below).
        let carrier = try NftnlSet()
        let s = carrier.pointer
        let ranges = shape?.isConcatenatedInterval ?? false
        for element in elements {
            guard let e = nftnl_set_elem_alloc() else { throw LoweringError(message: "out of memory (nftnl_set_elem_alloc)") }
            nftnl_set_elem_add(s, e)  // the set owns it from here
            if ranges {
                let (low, high) = try ElementKey.range(element.key)
                try check(low.withUnsafeBytes { nftnl_set_elem_set(e, Attr.id(NFTNL_SET_ELEM_KEY), $0.baseAddress, UInt32($0.count)) }, "element key")
                try check(high.withUnsafeBytes { nftnl_set_elem_set(e, Attr.id(NFTNL_SET_ELEM_KEY_END), $0.baseAddress, UInt32($0.count)) }, "element end key")
            } else {
                let key = try ElementKey.encode(element.key)
                try check(key.withUnsafeBytes { nftnl_set_elem_set(e, Attr.id(NFTNL_SET_ELEM_KEY), $0.baseAddress, UInt32($0.count)) }, "element key")
            }
            guard withData else { continue }
            if let verdict = element.verdict {
                guard case .immediateVerdict(let code, let chain) = Lowering.verdictExpression(verdict) else { continue }
                nftnl_set_elem_set_u32(e, Attr.id(NFTNL_SET_ELEM_VERDICT), UInt32(bitPattern: code))
                if let chain { try check(nftnl_set_elem_set_str(e, Attr.id(NFTNL_SET_ELEM_CHAIN), chain), "element chain") }
            }
            if !element.data.isEmpty {
                let data = try ElementKey.encode(element.data)
                try check(data.withUnsafeBytes { nftnl_set_elem_set(e, Attr.id(NFTNL_SET_ELEM_DATA), $0.baseAddress, UInt32($0.count)) }, "element data")
            }
            if let data = Userdata.comment(element.comment, type: K.udataSetElemComment) {
                try check(data.bytes.withUnsafeBytes { nftnl_set_elem_set(e, Attr.id(NFTNL_SET_ELEM_USERDATA), $0.baseAddress, UInt32($0.count)) }, "element comment")
            }
        }
        guard let iterator = nftnl_set_elems_iter_create(s) else { throw LoweringError(message: "out of memory (nftnl_set_elems_iter_create)") }
        defer { nftnl_set_elems_iter_destroy(iterator) }
        var more = true
        while more {
            try batch.add(type, family: ref.family, flags: flags, owner: index) { header throws(LoweringError) in
                mnl_attr_put_strz(header, UInt16(NFTA_SET_ELEM_LIST_TABLE.rawValue), ref.name.rawValue)
                mnl_attr_put_strz(header, UInt16(NFTA_SET_ELEM_LIST_SET.rawValue), setName.rawValue)
                more = nftnl_set_elems_nlmsg_build_payload_iter(header, iterator) == 1
            }
        }
    }

    private static func check(_ status: Int32, _ what: String) throws(LoweringError) {
        guard status >= 0 else { throw LoweringError(message: "libnftnl refused the \(what)") }
    }
}
