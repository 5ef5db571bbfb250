ä¸ž†€2
bdSeq X