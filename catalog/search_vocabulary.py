"""Words people use for what the catalog calls something else.

Query expansion for catalog search: each entry maps a word a caller may type
to catalog words that mean the same need. Expanded terms count for less than
the caller's own words (see search.SYNONYM_WEIGHT). Keys and values are plain
lower-case words; Chinese entries are whole words, matched inside the query.
"""

ENGLISH_STOPWORDS = frozenset(
    "a an and any are as at be by can do does for from get give have how i if in into is it its me my of on "
    "or our please show tell that the their them there these this those to up use want what whats which who "
    "with you your need needs find".split()
)

ENGLISH_SYNONYMS = {
    "car": ["vehicle"], "cars": ["vehicle"], "auto": ["vehicle"], "automobile": ["vehicle"],
    "truck": ["vehicle"], "suv": ["vehicle"], "model": [],
    "calorie": ["food", "dish"], "calories": ["food", "dish"], "dish": ["food"], "meal": ["food", "dish"],
    "cuisine": ["food", "dish"], "eat": ["food"], "eating": ["food"], "nutrition": ["food"],
    "trash": ["waste", "garbage"], "garbage": ["waste"], "rubbish": ["waste"], "recycle": ["waste"],
    "recycling": ["waste"], "bin": ["waste"],
    "selfie": ["face"], "headshot": ["face", "portrait"], "mugshot": ["face"],
    "people": ["body", "pedestrian", "person"], "persons": ["body", "person"], "crowd": ["body", "count"],
    "human": ["body", "person"], "humans": ["body", "person"],
    "photo": ["image"], "photos": ["image"], "picture": ["image"], "pictures": ["image"], "pic": ["image"],
    "cartoon": ["anime"], "manga": ["anime"], "comic": ["anime"], "drawing": ["sketch"], "pencil": ["sketch"],
    "emotion": ["expression"], "emotions": ["expression"], "mood": ["expression"], "smile": ["expression"],
    "smiling": ["expression"], "feeling": ["expression"],
    "famous": ["celebrity"], "star": ["celebrity"], "celeb": ["celebrity"], "actor": ["celebrity"],
    "actress": ["celebrity"], "politician": ["public", "figure"],
    "spoof": ["liveness"], "spoofing": ["liveness"], "alive": ["liveness"], "live": ["liveness"],
    "real": ["liveness"],
    "colour": ["color"], "colours": ["color"], "palette": ["color"],
    "passport": ["certificate", "id"], "visa": ["certificate"],
    "fruit": ["fruits"], "apple": ["fruits"], "banana": ["fruits"],
    "async": ["job"], "task": ["job"], "pending": ["job", "result"],
    "anonymize": ["blur"], "anonymise": ["blur"], "privacy": ["blur"], "pixelate": ["blur"],
    "same": ["comparison", "compare"], "match": ["compare"], "identical": ["compare"],
    "tags": ["tagging"], "labels": ["tagging"], "label": ["tagging"],
    "pose": ["posture", "keypoint"], "skeleton": ["posture", "keypoint"],
    "thin": ["slim"], "slimmer": ["slim"], "thinner": ["slim"],
    "wrinkles": ["skin"], "acne": ["skin"], "pimples": ["skin"],
    "fake": ["deepfake"], "swapped": ["deepfake", "merge"], "swap": ["merge"],
    "exam": ["examination", "proctoring"], "cheating": ["examination", "proctoring"],
}

CHINESE_SYNONYMS = {
    "汽车": ["车型"], "车辆": ["车型"], "什么车": ["车型"], "车子": ["车型"], "轿车": ["车型"],
    "卡路里": ["菜品"], "热量": ["菜品"], "菜": ["菜品"], "饭菜": ["菜品"], "美食": ["菜品"], "食物": ["菜品"],
    "垃圾": ["垃圾分类"], "废品": ["垃圾分类"], "回收": ["垃圾分类"],
    "名人": ["明星"], "明星": ["明星识别"], "演员": ["明星"],
    "自拍": ["人脸"], "头像": ["人脸"], "脸": ["人脸"],
    "几个人": ["人体计数"], "多少人": ["人体计数"], "人数": ["人体计数"],
    "动漫": ["动漫化"], "卡通": ["动漫化"], "素描": ["素描"],
    "表情": ["表情识别"], "情绪": ["表情识别"], "心情": ["表情识别"],
    "真人": ["活体"], "假脸": ["换脸鉴别"], "换脸": ["换脸鉴别"],
    "颜色": ["色板"], "配色": ["色板"], "色彩": ["色板"],
    "水果": ["水果检测"], "证件照": ["证件照质量"],
    "打码": ["脱敏"], "马赛克": ["脱敏"], "隐私": ["脱敏"],
    "瘦脸": ["瘦脸"], "美白": ["美肤"], "磨皮": ["美肤"], "手势": ["手势识别"],
}
