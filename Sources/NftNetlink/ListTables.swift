internal import CNftables
import NftIR
#if canImport(Glibc)
import Glibc
#endif

extension NetlinkBackend {
    /// Every table in the network namespace (family and name), from one NFT_MSG_GETTABLE dump,
    /// without their contents: how the agent finds its shard tables.
    public func listTables() throws(BackendError) -> [TableRef] {
        let socket = try NetlinkSocket(netnsPath: netnsPath)
        var tables: [TableRef] = []
        try socket.request(NFT_MSG_GETTABLE, family: UInt16(AF_UNSPEC), dump: true, build: { _ throws(LoweringError) in }) { message throws(BackendError) in
            guard let object = try? NftnlTable(), nftnl_table_nlmsg_parse(message, object.pointer) >= 0,
                  let name = nftnl_table_get_str(object.pointer, Attr.id(NFTNL_TABLE_NAME)) else {
                throw BackendError(errno: EPROTO, message: "listing tables: cannot parse the kernel's answer")
            }
            let family = nftnl_table_get_u32(object.pointer, Attr.id(NFTNL_TABLE_FAMILY))
            guard let parsed = Name(String(cString: name)),
                  let ours = Family.allCases.first(where: { UInt32($0.nfproto) == family }) else { return }
            tables.append(TableRef(ours, parsed))
        }
        return tables.sorted()
    }
}
