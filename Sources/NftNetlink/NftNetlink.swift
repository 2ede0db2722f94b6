internal import CNftables
import NftIR
