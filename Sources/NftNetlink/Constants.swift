internal import CNftables

/// Kernel and nft constants, taken from the UAPI headers where they exist there, with the C
/// name next to each Swift name. Values that are nft-internal (datatype ids, udata layout)
/// are written out, with where they come from.
enum K {
    // Registers (enum nft_registers).
    static let regVerdict = UInt32(NFT_REG_VERDICT.rawValue)  // NFT_REG_VERDICT = 0
    static let reg1 = UInt32(NFT_REG_1.rawValue)  // NFT_REG_1 = 1
    static let reg2 = UInt32(NFT_REG_2.rawValue)  // NFT_REG_2 = 2
    static let reg32_00 = UInt32(NFT_REG32_00.rawValue)  // NFT_REG32_00 = 8

    // Payload bases (enum nft_payload_bases).
    static let networkHeader = UInt32(NFT_PAYLOAD_NETWORK_HEADER.rawValue)
    static let transportHeader = UInt32(NFT_PAYLOAD_TRANSPORT_HEADER.rawValue)

    // Meta keys (enum nft_meta_keys).
    static let metaMark = UInt32(NFT_META_MARK.rawValue)
    static let metaL4proto = UInt32(NFT_META_L4PROTO.rawValue)

    // Conntrack (enum nft_ct_keys; ip_conntrack_info / ip_conntrack_status bits as nft's ct_state / ct_status).
    static let ctState = UInt32(NFT_CT_STATE.rawValue)
    static let ctStatus = UInt32(NFT_CT_STATUS.rawValue)
    static let ctDstIP = UInt32(NFT_CT_DST_IP.rawValue)  // NFT_CT_DST_IP = 20
    static let ctDstIP6 = UInt32(NFT_CT_DST_IP6.rawValue)  // NFT_CT_DST_IP6 = 22
    static let ctProtoDst = UInt32(NFT_CT_PROTO_DST.rawValue)  // NFT_CT_PROTO_DST = 12
    static let ctDirOriginal: UInt8 = 0  // IP_CT_DIR_ORIGINAL (nf_conntrack_tuple_common.h)
    static let ctStateNewBit: UInt32 = 8  // NF_CT_STATE_BIT(IP_CT_NEW)
    static let ctStatusDstNAT: UInt32 = 0x20  // IPS_DST_NAT

    // fib (enum nft_fib_flags, enum nft_fib_result; RTN_LOCAL from rtnetlink.h).
    static let fibSaddr = UInt32(NFTA_FIB_F_SADDR.rawValue)
    static let fibDaddr = UInt32(NFTA_FIB_F_DADDR.rawValue)
    static let fibAddrtype = UInt32(NFT_FIB_RESULT_ADDRTYPE.rawValue)
    static let rtnLocal: UInt32 = 2  // RTN_LOCAL

    // cmp (enum nft_cmp_ops).
    static let cmpEq = UInt32(NFT_CMP_EQ.rawValue)
    static let cmpNeq = UInt32(NFT_CMP_NEQ.rawValue)

    // bitwise (enum nft_bitwise_ops).
    static let bitwiseMaskXor = UInt32(NFT_BITWISE_MASK_XOR.rawValue)  // NFT_BITWISE_MASK_XOR = 0

    // byteorder (enum nft_byteorder_ops).
    static let byteorderHton = UInt32(NFT_BYTEORDER_HTON.rawValue)  // NFT_BYTEORDER_HTON = 1

    // lookup flags (enum nft_lookup_flags), dynset ops (enum nft_dynset_ops).
    static let lookupInvert = UInt32(NFT_LOOKUP_F_INV.rawValue)  // NFT_LOOKUP_F_INV = 1
    static let dynsetUpdate = UInt32(NFT_DYNSET_OP_UPDATE.rawValue)  // NFT_DYNSET_OP_UPDATE = 1

    // numgen (enum nft_ng_types).
    static let numgenIncremental = UInt32(NFT_NG_INCREMENTAL.rawValue)

    // nat (enum nft_nat_types, NF_NAT_RANGE_*).
    static let natDNAT = UInt32(NFT_NAT_DNAT.rawValue)
    static let natMapIPs = UInt32(NF_NAT_RANGE_MAP_IPS)
    static let natProtoSpecified = UInt32(NF_NAT_RANGE_PROTO_SPECIFIED)
    static let natRandomFully = UInt32(NF_NAT_RANGE_PROTO_RANDOM_FULLY)

    // reject (enum nft_reject_types; ICMP_PORT_UNREACH, ICMPV6_PORT_UNREACH).
    static let rejectICMPUnreach = UInt32(NFT_REJECT_ICMP_UNREACH.rawValue)
    static let icmpPortUnreach: UInt8 = 3  // ICMP_PORT_UNREACH
    static let icmpv6PortUnreach: UInt8 = 4  // ICMPV6_PORT_UNREACH

    // Verdicts (enum nft_verdicts, NF_ACCEPT / NF_DROP).
    static let verdictAccept = Int32(NF_ACCEPT)
    static let verdictDrop = Int32(NF_DROP)
    static let verdictReturn = Int32(NFT_RETURN.rawValue)
    static let verdictJump = Int32(NFT_JUMP.rawValue)
    static let verdictGoto = Int32(NFT_GOTO.rawValue)

    // Sets (enum nft_set_flags, enum nft_data_types).
    static let setMap = UInt32(NFT_SET_MAP.rawValue)  // NFT_SET_MAP = 0x8
    static let setInterval = UInt32(NFT_SET_INTERVAL.rawValue)  // NFT_SET_INTERVAL = 0x4
    static let setTimeout = UInt32(NFT_SET_TIMEOUT.rawValue)  // NFT_SET_TIMEOUT = 0x10
    static let setEval = UInt32(NFT_SET_EVAL.rawValue)  // NFT_SET_EVAL = 0x20 (nft's `dynamic`)
    static let setConcat = UInt32(NFT_SET_CONCAT.rawValue)  // NFT_SET_CONCAT = 0x80
    static let dataVerdict = UInt32(NFT_DATA_VERDICT.rawValue)  // 0xffffff00

    // nft's `enum datatypes` ids (nftables include/datatype.h), used in NFTA_SET_KEY_TYPE.
    static let typeIPv4Address: UInt32 = 7  // TYPE_IPADDR
    static let typeIPv6Address: UInt32 = 8  // TYPE_IP6ADDR
    static let typeInetProto: UInt32 = 12  // TYPE_INET_PROTOCOL
    static let typeInetService: UInt32 = 13  // TYPE_INET_SERVICE
    /// TYPE_BITS: a concatenation's type id folds its fields in, 6 bits each.
    static let typeBits: UInt32 = 6

    // Userdata TLV types (enum nftnl_udata_*_types) and nft's values inside them.
    static let udataTableComment = UInt8(NFTNL_UDATA_TABLE_COMMENT.rawValue)  // 0
    static let udataRuleComment = UInt8(NFTNL_UDATA_RULE_COMMENT.rawValue)  // 0
    static let udataSetElemComment = UInt8(NFTNL_UDATA_SET_ELEM_COMMENT.rawValue)  // 0
    static let udataSetKeyByteorder = UInt8(NFTNL_UDATA_SET_KEYBYTEORDER.rawValue)  // 0
    static let udataSetDataByteorder = UInt8(NFTNL_UDATA_SET_DATABYTEORDER.rawValue)  // 1
    static let udataSetKeyTypeof = UInt8(NFTNL_UDATA_SET_KEY_TYPEOF.rawValue)  // 3
    static let udataSetDataTypeof = UInt8(NFTNL_UDATA_SET_DATA_TYPEOF.rawValue)  // 4
    static let udataSetDataInterval = UInt8(NFTNL_UDATA_SET_DATA_INTERVAL.rawValue)  // 6
    static let udataSetComment = UInt8(NFTNL_UDATA_SET_COMMENT.rawValue)  // 7
    static let udataTypeofExpr = UInt8(NFTNL_UDATA_SET_TYPEOF_EXPR)  // 0
    static let udataTypeofData = UInt8(NFTNL_UDATA_SET_TYPEOF_DATA)  // 1
    /// nft's `enum byteorder`: BYTEORDER_INVALID 0, BYTEORDER_HOST_ENDIAN 1, BYTEORDER_BIG_ENDIAN 2.
    static let byteorderInvalid: UInt32 = 0
    static let byteorderBigEndian: UInt32 = 2
    /// nft's `enum expr_types` EXPR_CONCAT, written as the key's typeof expression of a concatenated `type`.
    static let exprConcat: UInt32 = 13
}
