internal import CNftables
import NftIR
import ServiceModel
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension NetlinkSocket {
    /// Sends one GET request and hands each reply message to `body`, until NLMSG_DONE (dump),
    /// the single reply (plain get) or an error. A dump the kernel marks inconsistent
    /// (NLM_F_DUMP_INTR: the ruleset changed meanwhile) throws EINTR so the caller re-reads.
    func request(_ type: nf_tables_msg_types, family: UInt16, dump: Bool,
                 build: (UnsafeMutablePointer<nlmsghdr>) throws(LoweringError) -> Void,
                 each body: (UnsafePointer<nlmsghdr>) throws(BackendError) -> Void) throws(BackendError) {
        let seq = nextSeq()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 16)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        guard let base = buffer.baseAddress,
              let header = nftnl_nlmsg_build_hdr(base.assumingMemoryBound(to: CChar.self), UInt16(type.rawValue), family,
                                                 UInt16(dump ? NLM_F_DUMP : 0) | UInt16(NLM_F_REQUEST), seq) else {
            throw BackendError(errno: ENOMEM, message: "cannot build a netlink request")
        }
        do { try build(header) } catch { throw BackendError(errno: EINVAL, message: "cannot build a netlink request: \(error.message)") }
        try send(UnsafeRawBufferPointer(start: header, count: Int(header.pointee.nlmsg_len)))

        while true {
            guard case .messages(let messages) = try receive(blocking: true) else {
                throw BackendError(errno: ENOBUFS, message: "netlink dropped part of a dump (receive buffer overrun)")
            }
            for message in messages {
                // Skip anything that is not the answer to this request (there should be nothing).
                guard message.pointee.nlmsg_seq == seq, message.pointee.nlmsg_pid == portID else { continue }
                switch Int32(message.pointee.nlmsg_type) {
                case NLMSG_DONE:
                    if message.pointee.nlmsg_flags & UInt16(NLM_F_DUMP_INTR) != 0 { throw BackendError(errno: EINTR, message: "dump interrupted") }
                    return
                case NLMSG_ERROR:
                    guard let ack = Ack(message) else { throw BackendError(errno: EPROTO, message: "malformed netlink error message") }
                    if ack.errno == 0 { return }
                    throw BackendError(errno: ack.errno, message: "\(Self.name(type)): \(errorText(ack.errno))" + (ack.text.map { " (\($0))" } ?? ""))
                default:
                    if message.pointee.nlmsg_flags & UInt16(NLM_F_DUMP_INTR) != 0 { throw BackendError(errno: EINTR, message: "dump interrupted") }
                    try body(message)
                    if !dump { return }
                }
            }
        }
    }

    /// What a request is called in error messages.
    static func name(_ type: nf_tables_msg_types) -> String {
        switch type {
        case NFT_MSG_GETGEN: "reading the ruleset generation (NFT_MSG_GETGEN)"
        case NFT_MSG_GETTABLE: "reading a table (NFT_MSG_GETTABLE)"
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
        try request(NFT_MSG_GETGEN, family: UInt16(AF_UNSPEC), dump: false, build: { _ in }) { message throws(BackendError) in
            guard let gen = try? NftnlGen(), nftnl_gen_nlmsg_parse(message, gen.pointer) >= 0 else {
                throw BackendError(errno: EPROTO, message: "cannot parse the generation id")
            }
            generation = nftnl_gen_get_u32(gen.pointer, Attr.id(NFTNL_GEN_ID))
        }
        guard let generation else { throw BackendError(errno: EPROTO, message: "no generation id in the kernel's answer") }
        return generation
    }
}

/// Reads tables back into the IR through per-table requests.
struct TableReader {
    let socket: NetlinkSocket

    /// The table, or nil when it does not exist.
    func read(_ ref: TableRef) throws(BackendError) -> Table? {
        let family = UInt16(ref.family.nfproto)
        var table: Table?
        do {
            try socket.request(NFT_MSG_GETTABLE, family: family, dump: false, build: { header throws(LoweringError) in
                let object = try NftnlTable()
                nftnl_table_set_str(object.pointer, Attr.id(NFTNL_TABLE_NAME), ref.name.rawValue)
                nftnl_table_nlmsg_build_payload(header, object.pointer)
            }) { message throws(BackendError) in
                table = try parseTable(message, ref: ref)
            }
        } catch where error.errno == ENOENT {
            return nil
        }
        guard var table else { return nil }

        var sets = try readSets(ref)
        for index in sets.indices {
            sets[index].elements = try readElements(of: sets[index], ref: ref)
        }
        table.sets = sets

        // Chains: the kernel has no table filter for chain dumps, so the family's chains come
        // back and everything outside this table is dropped unparsed (by its NFTA_CHAIN_TABLE).
        var chains: [Chain] = []
        try socket.request(NFT_MSG_GETCHAIN, family: family, dump: true, build: { header throws(LoweringError) in
            let object = try NftnlChain()
            nftnl_chain_set_str(object.pointer, Attr.id(NFTNL_CHAIN_TABLE), ref.name.rawValue)
            nftnl_chain_nlmsg_build_payload(header, object.pointer)
        }) { message throws(BackendError) in
            if let chain = try parseChain(message, ref: ref) { chains.append(chain) }
        }

        // Rules: one dump per chain (NFTA_RULE_TABLE + NFTA_RULE_CHAIN). A whole-table rule dump
        // would cost O(rules²) in the kernel, which re-walks the table from its first rule for
        // every 32 KiB of answer; a chain's dump walks only that chain.
        let catalog = SetCatalog(sets)
        for index in chains.indices {
            let chainName = chains[index].name
            var rules: [Rule] = []
            try socket.request(NFT_MSG_GETRULE, family: family, dump: true, build: { header throws(LoweringError) in
                let object = try NftnlRule()
                nftnl_rule_set_str(object.pointer, Attr.id(NFTNL_RULE_TABLE), ref.name.rawValue)
                nftnl_rule_set_str(object.pointer, Attr.id(NFTNL_RULE_CHAIN), chainName.rawValue)
                nftnl_rule_nlmsg_build_payload(header, object.pointer)
            }) { message throws(BackendError) in
                if let (chain, rule) = try parseRule(message, ref: ref, sets: catalog) {
                    guard chain == chainName else {
                        throw BackendError(errno: EPROTO, message: "table \(ref): asked for the rules of chain \(chainName), got one of \(chain)")
                    }
                    rules.append(rule)
                }
            }
            chains[index].rules = rules
        }
        table.chains = chains
        return table
    }

    /// The table's sets and maps, without their elements; none when the table does not exist.
    /// The dump is filtered by table in the kernel (NFTA_SET_TABLE).
    func readSets(_ ref: TableRef) throws(BackendError) -> [NamedSet] {
        var sets: [NamedSet] = []
        do {
            try socket.request(NFT_MSG_GETSET, family: UInt16(ref.family.nfproto), dump: true, build: { header throws(LoweringError) in
                let object = try NftnlSet()
                nftnl_set_set_str(object.pointer, Attr.id(NFTNL_SET_TABLE), ref.name.rawValue)
                nftnl_set_nlmsg_build_payload(header, object.pointer)
            }) { message throws(BackendError) in
                if let set = try parseSet(message, ref: ref) { sets.append(set) }
            }
        } catch where error.errno == ENOENT {
            return []
        }
        return sets
    }

    private func parseTable(_ message: UnsafePointer<nlmsghdr>, ref: TableRef) throws(BackendError) -> Table {
        guard let object = try? NftnlTable(), nftnl_table_nlmsg_parse(message, object.pointer) >= 0 else {
            throw BackendError(errno: EPROTO, message: "table \(ref): cannot parse the kernel's answer")
        }
        let t = object.pointer
        let flags = nftnl_table_is_set(t, Attr.id(NFTNL_TABLE_FLAGS)) ? nftnl_table_get_u32(t, Attr.id(NFTNL_TABLE_FLAGS)) : 0
        guard flags == 0 else {
            throw BackendError(errno: EPROTO, message: "table \(ref) has flags 0x\(String(flags, radix: 16)) (dormant or owned), which nftproxy never sets")
        }
        var comment: Comment?
        if let data = userdata(nftnl_table_is_set(t, Attr.id(NFTNL_TABLE_USERDATA)), { nftnl_table_get_data(t, Attr.id(NFTNL_TABLE_USERDATA), &$0) }) {
            comment = data.string(K.udataTableComment).map(Comment.init)
        }
        return Table(family: ref.family, name: ref.name, comment: comment)
    }

    private func parseSet(_ message: UnsafePointer<nlmsghdr>, ref: TableRef) throws(BackendError) -> NamedSet? {
        guard let object = try? NftnlSet(), nftnl_set_nlmsg_parse(message, object.pointer) >= 0 else {
            throw BackendError(errno: EPROTO, message: "table \(ref): cannot parse a set")
        }
        let s = object.pointer
        guard let table = Attr.string(nftnl_set_get_str(s, Attr.id(NFTNL_SET_TABLE))), table == ref.name.rawValue else { return nil }
        let rawName = Attr.string(nftnl_set_get_str(s, Attr.id(NFTNL_SET_NAME))) ?? "?"
        func unexpected(_ what: String) -> BackendError {
            BackendError(errno: EPROTO, message: "table \(ref): set \(rawName) \(what), which nftproxy does not write (edited by hand or by another tool?)")
        }
        guard let name = Name(rawName) else { throw unexpected("has an invalid name") }
        func has(_ attribute: nftnl_set_attr) -> Bool { nftnl_set_is_set(s, Attr.id(attribute)) }
        func u32(_ attribute: nftnl_set_attr) -> UInt32 { nftnl_set_get_u32(s, Attr.id(attribute)) }

        let rawFlags = u32(NFTNL_SET_FLAGS)
        let known = K.setMap | K.setInterval | K.setConcat | K.setTimeout | K.setEval
        guard rawFlags & ~known == 0 else { throw unexpected("has flags 0x\(String(rawFlags, radix: 16))") }
        var flags: SetFlags = []
        if rawFlags & K.setInterval != 0 { flags.insert(.interval) }
        if rawFlags & K.setTimeout != 0 { flags.insert(.timeout) }
        if rawFlags & K.setEval != 0 { flags.insert(.dynamic) }
        guard let key = KeyType.types(id: u32(NFTNL_SET_KEY_TYPE)), Int(u32(NFTNL_SET_KEY_LEN)) == KeyType.length(key) else {
            throw unexpected("has a key type nftproxy does not use")
        }
        // nftproxy's interval sets are concatenations, which nft marks NFT_SET_CONCAT (pipapo) with each field's length.
        let concatenatedInterval = flags.contains(.interval) && key.count > 1
        guard (rawFlags & K.setConcat != 0) == concatenatedInterval, !flags.contains(.interval) || concatenatedInterval else {
            throw unexpected("has flags 0x\(String(rawFlags, radix: 16)) for a \(key.count)-field key")
        }
        if concatenatedInterval {
            var count: UInt32 = 0
            let lengths = Attr.bytes(nftnl_set_get_data(s, Attr.id(NFTNL_SET_DESC_CONCAT), &count), count)
            guard lengths == key.map({ UInt8($0.length) }) else { throw unexpected("has field lengths \(lengths)") }
        }
        var isMap = false
        var data: [DataType] = []
        if rawFlags & K.setMap != 0 {
            if u32(NFTNL_SET_DATA_TYPE) == K.dataVerdict {
                isMap = true
            } else if let types = KeyType.types(id: u32(NFTNL_SET_DATA_TYPE)), Int(u32(NFTNL_SET_DATA_LEN)) == KeyType.length(types) {
                data = types
            } else {
                throw unexpected("maps to a type nftproxy does not use")
            }
        }
        if has(NFTNL_SET_TIMEOUT), nftnl_set_get_u64(s, Attr.id(NFTNL_SET_TIMEOUT)) != 0 { throw unexpected("has a default timeout") }
        // The kernel keeps a size only when one was given, except that a dynset binding a set
        // without one gives it 65535 (and `nft list` shows `size 65535`): that is the IR's nil,
        // the kernel's default, not drift. (So a dynamic set declared with size 65535 reads back without.)
        var size = has(NFTNL_SET_DESC_SIZE) && u32(NFTNL_SET_DESC_SIZE) != 0 ? u32(NFTNL_SET_DESC_SIZE) : nil
        if flags.contains(.dynamic), size == 65535 { size = nil }
        var comment: Comment?
        if let udata = userdata(has(NFTNL_SET_USERDATA), { nftnl_set_get_data(s, Attr.id(NFTNL_SET_USERDATA), &$0) }) {
            comment = udata.string(K.udataSetComment).map(Comment.init)
        }
        return NamedSet(name, key: key, isMap: isMap, data: data, flags: flags, size: size, comment: comment)
    }

    /// Elements come back in the set backend's (hash) order; they are returned sorted by key,
    /// the order the compiler produces and `nft list` prints.
    private func readElements(of set: NamedSet, ref: TableRef) throws(BackendError) -> [Element] {
        var elements: [(order: ElementOrder, element: Element)] = []
        try socket.request(NFT_MSG_GETSETELEM, family: UInt16(ref.family.nfproto), dump: true, build: { header throws(LoweringError) in
            let object = try NftnlSet()
            nftnl_set_set_str(object.pointer, Attr.id(NFTNL_SET_TABLE), ref.name.rawValue)
            nftnl_set_set_str(object.pointer, Attr.id(NFTNL_SET_NAME), set.name.rawValue)
            nftnl_set_elems_nlmsg_build_payload(header, object.pointer)
        }) { message throws(BackendError) in
            guard let object = try? NftnlSet(), nftnl_set_elems_nlmsg_parse(message, object.pointer) >= 0 else {
                throw BackendError(errno: EPROTO, message: "table \(ref): cannot parse the elements of \(set.name)")
            }
            guard let iterator = nftnl_set_elems_iter_create(object.pointer) else { throw BackendError(errno: ENOMEM, message: "out of memory") }
            defer { nftnl_set_elems_iter_destroy(iterator) }
            while let e = nftnl_set_elems_iter_next(iterator) {
                elements.append(try parseElement(e, set: set, ref: ref))
            }
        }
        return elements.sorted { $0.order < $1.order }.map(\.element)
    }

    private func parseElement(_ e: OpaquePointer, set: NamedSet, ref: TableRef) throws(BackendError) -> (ElementOrder, Element) {
        func unexpected(_ what: String) -> BackendError {
            BackendError(errno: EPROTO, message: "table \(ref): an element of \(set.name) \(what), which nftproxy does not write")
        }
        func has(_ attribute: Int) -> Bool { nftnl_set_elem_is_set(e, Attr.id(attribute)) }
        func bytes(_ attribute: Int) -> [UInt8]? {
            var length: UInt32 = 0
            guard has(attribute), let pointer = nftnl_set_elem_get(e, Attr.id(attribute), &length) else { return nil }
            return Attr.bytes(pointer, length)
        }
        guard let keyBytes = bytes(NFTNL_SET_ELEM_KEY) else { throw unexpected("has no key") }
        let endBytes = bytes(NFTNL_SET_ELEM_KEY_END)
        guard (endBytes != nil) == set.isConcatenatedInterval else { throw unexpected(endBytes == nil ? "has no end key" : "has an end key") }
        guard let key = ElementKey.decode(low: keyBytes, high: endBytes ?? keyBytes, types: set.key) else {
            throw unexpected("has a key that does not decode")
        }
        if has(NFTNL_SET_ELEM_FLAGS), nftnl_set_elem_get_u32(e, Attr.id(NFTNL_SET_ELEM_FLAGS)) != 0 { throw unexpected("has flags") }
        guard !has(NFTNL_SET_ELEM_EXPR), !has(NFTNL_SET_ELEM_EXPRESSIONS), !has(NFTNL_SET_ELEM_OBJREF) else { throw unexpected("has expressions") }
        // Entries of a timeout set come with their timeout and time left, which the IR leaves out.
        guard set.flags.contains(.timeout) || (!has(NFTNL_SET_ELEM_TIMEOUT) && !has(NFTNL_SET_ELEM_EXPIRATION)) else {
            throw unexpected("has a timeout")
        }
        var verdict: Verdict?
        var data: [KeyValue] = []
        if set.isMap {
            guard has(NFTNL_SET_ELEM_VERDICT) else { throw unexpected("has no verdict") }
            let code = Int32(bitPattern: nftnl_set_elem_get_u32(e, Attr.id(NFTNL_SET_ELEM_VERDICT)))
            let chain = has(NFTNL_SET_ELEM_CHAIN) ? Attr.string(nftnl_set_elem_get_str(e, Attr.id(NFTNL_SET_ELEM_CHAIN))) : nil
            guard let decoded = Raising.verdict(code: code, chain: chain) else { throw unexpected("has verdict \(code)") }
            verdict = decoded
        } else if has(NFTNL_SET_ELEM_VERDICT) {
            throw unexpected("has a verdict outside a verdict map")
        }
        if !set.data.isEmpty {
            guard let dataBytes = bytes(NFTNL_SET_ELEM_DATA), let decoded = ElementKey.decode(dataBytes, types: set.data) else {
                throw unexpected("has no data, or data that does not decode")
            }
            data = decoded
        } else if has(NFTNL_SET_ELEM_DATA) {
            throw unexpected("has data outside a data map")
        }
        var comment: Comment?
        if let userdata = bytes(NFTNL_SET_ELEM_USERDATA) {
            comment = Userdata(bytes: userdata).string(K.udataSetElemComment).map(Comment.init)
        }
        return (ElementOrder(keyBytes), Element(key, verdict: verdict, data: data, comment: comment))
    }

    private func parseChain(_ message: UnsafePointer<nlmsghdr>, ref: TableRef) throws(BackendError) -> Chain? {
        guard let object = try? NftnlChain(), nftnl_chain_nlmsg_parse(message, object.pointer) >= 0 else {
            throw BackendError(errno: EPROTO, message: "table \(ref): cannot parse a chain")
        }
        let c = object.pointer
        guard let table = Attr.string(nftnl_chain_get_str(c, Attr.id(NFTNL_CHAIN_TABLE))), table == ref.name.rawValue else { return nil }
        let rawName = Attr.string(nftnl_chain_get_str(c, Attr.id(NFTNL_CHAIN_NAME))) ?? "?"
        func unexpected(_ what: String) -> BackendError {
            BackendError(errno: EPROTO, message: "table \(ref): chain \(rawName) \(what), which nftproxy does not write (edited by hand or by another tool?)")
        }
        guard let name = Name(rawName) else { throw unexpected("has an invalid name") }
        guard nftnl_chain_is_set(c, Attr.id(NFTNL_CHAIN_HOOKNUM)) else { return Chain(name) }
        let hookNumber = nftnl_chain_get_u32(c, Attr.id(NFTNL_CHAIN_HOOKNUM))
        guard let hook = [Hook.prerouting, .input, .forward, .output, .postrouting].first(where: { $0.number == hookNumber }) else {
            throw unexpected("hooks into \(hookNumber)")
        }
        let typeName = Attr.string(nftnl_chain_get_str(c, Attr.id(NFTNL_CHAIN_TYPE))) ?? "?"
        guard let type = ChainType(rawValue: typeName) else { throw unexpected("has type \(typeName)") }
        if nftnl_chain_is_set(c, Attr.id(NFTNL_CHAIN_POLICY)), nftnl_chain_get_u32(c, Attr.id(NFTNL_CHAIN_POLICY)) != UInt32(NF_ACCEPT) {
            throw unexpected("has policy drop")
        }
        let priority = PriorityName.priority(nftnl_chain_get_s32(c, Attr.id(NFTNL_CHAIN_PRIO)), type: type, hook: hook)
        return Chain(name, base: BaseChain(type: type, hook: hook, priority: priority))
    }

    private func parseRule(_ message: UnsafePointer<nlmsghdr>, ref: TableRef, sets: SetCatalog) throws(BackendError) -> (Name, Rule)? {
        guard let object = try? NftnlRule(), nftnl_rule_nlmsg_parse(message, object.pointer) >= 0 else {
            throw BackendError(errno: EPROTO, message: "table \(ref): cannot parse a rule")
        }
        let r = object.pointer
        guard let table = Attr.string(nftnl_rule_get_str(r, Attr.id(NFTNL_RULE_TABLE))), table == ref.name.rawValue else { return nil }
        let chainName = Attr.string(nftnl_rule_get_str(r, Attr.id(NFTNL_RULE_CHAIN))) ?? "?"
        guard let chain = Name(chainName) else {
            throw BackendError(errno: EPROTO, message: "table \(ref): a rule in chain \(chainName), which is not a valid name")
        }
        var expressions: [Expression] = []
        guard let iterator = nftnl_expr_iter_create(r) else { throw BackendError(errno: ENOMEM, message: "out of memory") }
        while let e = nftnl_expr_iter_next(iterator) {
            expressions.append(ExpressionCodec.read(e))
        }
        nftnl_expr_iter_destroy(iterator)
        guard let statements = Raising.rule(expressions, family: ref.family, sets: sets) else {
            let handle = nftnl_rule_get_u64(r, Attr.id(NFTNL_RULE_HANDLE))
            throw BackendError(errno: EPROTO, message: "table \(ref): chain \(chain): rule (handle \(handle)) is not one nftproxy writes (edited by hand or by another tool?): "
                               + expressions.map { "[ \($0) ]" }.joined(separator: " "))
        }
        var comment: Comment?
        if let data = userdata(nftnl_rule_is_set(r, Attr.id(NFTNL_RULE_USERDATA)), { nftnl_rule_get_data(r, Attr.id(NFTNL_RULE_USERDATA), &$0) }) {
            comment = data.string(K.udataRuleComment).map(Comment.init)
        }
        return (chain, Rule(statements, comment: comment))
    }

    private func userdata(_ isSet: Bool, _ get: (inout UInt32) -> UnsafeRawPointer?) -> Userdata? {
        guard isSet else { return nil }
        var length: UInt32 = 0
        guard let pointer = get(&length) else { return nil }
        return Userdata(bytes: Attr.bytes(pointer, length))
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

    init(_ bytes: [UInt8]) {
        var words = [UInt64](repeating: 0, count: 8)
        for (index, byte) in bytes.prefix(64).enumerated() {
            words[index / 8] |= UInt64(byte) << (56 - 8 * UInt64(index % 8))
        }
        head = (words[0], words[1], words[2], words[3])
        tail = (words[4], words[5], words[6], words[7])
    }

    static func == (lhs: ElementOrder, rhs: ElementOrder) -> Bool { lhs.head == rhs.head && lhs.tail == rhs.tail }

    static func < (lhs: ElementOrder, rhs: ElementOrder) -> Bool {
        lhs.head != rhs.head ? lhs.head < rhs.head : lhs.tail < rhs.tail
    }
}
