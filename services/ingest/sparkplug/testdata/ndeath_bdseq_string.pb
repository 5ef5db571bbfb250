ä¸ž†€2
bdSeq z1