internal import CNftables
import NftIR
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The operation behind a message the kernel refused, rebuilt from the message itself: a
/// consuming apply (`NetlinkBackend.apply(consuming:)`) has released its operations by the
/// time the acks arrive. Requests carry the attributes dumps do, so the readers' decoders serve.
/// An element message holds part of its operation's elements (at most 64 KiB of them), and the
/// rebuilt operation holds that part: the elements the kernel refused.
enum RefusedMessage {
    /// nil for a message nftproxy does not send, or one that does not decode.
    static func operation(_ message: UnsafePointer<nlmsghdr>, catalogs: [TableRef: SetCatalog]) -> Operation? {
        let header = UnsafeRawPointer(message).load(fromByteOffset: MemoryLayout<nlmsghdr>.size, as: nfgenmsg.self)
        guard let family = Family.allCases.first(where: { $0.nfproto == header.nfgen_family }) else { return nil }
        let type = UInt32(message.pointee.nlmsg_type & 0xff)
        // Each kind of object numbers its table and name attributes its own way.
        func strings(_ table: some RawRepresentable<UInt32>, _ name: some RawRepresentable<UInt32>) -> (table: TableRef, name: Name)? {
            var tableName: String?, objectName: String?
            for attribute in Attributes(message: message) {
                if attribute.type == UInt16(table.rawValue) { tableName = attribute.string }
                if attribute.type == UInt16(name.rawValue) { objectName = attribute.string }
            }
            guard let tableName = tableName.flatMap(Name.init) else { return nil }
            return (TableRef(family, tableName), objectName.flatMap(Name.init) ?? tableName)
        }
        switch type {
        case NFT_MSG_NEWTABLE.rawValue:
            let table = TableReader.parseTable(message)
            return table.ref.map { .addTable($0, comment: table.comment) }
        case NFT_MSG_DELTABLE.rawValue:
            return strings(NFTA_TABLE_NAME, NFTA_TABLE_NAME).map { .deleteTable($0.table) }
        case NFT_MSG_NEWSET.rawValue:
            guard let (ref, _) = strings(NFTA_SET_TABLE, NFTA_SET_NAME), let set = try? SetDecoder.set(message, table: ref) else { return nil }
            return .addSet(ref, set)
        case NFT_MSG_DELSET.rawValue:
            return strings(NFTA_SET_TABLE, NFTA_SET_NAME).map { .deleteSet($0.table, $0.name) }
        case NFT_MSG_NEWCHAIN.rawValue:
            guard let (ref, _) = strings(NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME), let chain = try? TableReader.parseChain(message, ref: ref) else { return nil }
            return .addChain(ref, chain.name, chain.base)
        case NFT_MSG_DELCHAIN.rawValue:
            return strings(NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME).map { .deleteChain($0.table, $0.name) }
        case NFT_MSG_DELRULE.rawValue:
            return strings(NFTA_RULE_TABLE, NFTA_RULE_CHAIN).map { .flushChain($0.table, $0.name) }
        case NFT_MSG_NEWRULE.rawValue:
            guard let (ref, chain) = strings(NFTA_RULE_TABLE, NFTA_RULE_CHAIN) else { return nil }
            var decoder = DumpDecoder()
            guard let rule = try? decoder.rule(message, ref: ref, chain: chain, sets: catalogs[ref] ?? SetCatalog()) else { return nil }
            return .addRule(ref, chain: chain, rule)
        case NFT_MSG_NEWSETELEM.rawValue, NFT_MSG_DELSETELEM.rawValue:
            guard let (ref, setName) = strings(NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET),
                  let set = catalogs[ref]?[setName] else { return nil }
            var decoder = DumpDecoder()
            var elements: [Element] = []
            for attribute in Attributes(message: message) where attribute.type == UInt16(NFTA_SET_ELEM_LIST_ELEMENTS.rawValue) {
                for element in attribute.nested {
                    guard let (_, decoded) = try? decoder.element(element, set: set, ref: ref) else { return nil }
                    elements.append(decoded)
                }
            }
            return type == NFT_MSG_NEWSETELEM.rawValue ? .addElements(ref, set: setName, elements) : .deleteElements(ref, set: setName, elements)
        default:
            return nil
        }
    }
}
