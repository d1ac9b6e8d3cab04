"""Plain words that synthetic prompts are drawn from (benchmark prompts, the routing chapter's documents)."""

#: Plain words to draw prompts from: common English, so that each word is a token or two, as in real text.
WORDS = (
    "the of and to in is that for it as with was on be by this are from at or an have not which but all they "
    "were we one their has been there more when will would who so if out up about into them than its time "
    "only could new some these two may first then do any like my now over such our man me even most made "
    "after also did many before must through back years where much your way well down should because each "
    "just those people how too little state good very make world still own see men work long get here "
    "between both life being under never day same another know while last might us great old year off come "
    "since against go came right used take three place small found general house part water light number "
    "river garden window letter market music morning city table paper story question system country answer "
    "school family evening bridge engine signal harbour winter summer station village mountain forest"
).split()
