"""Word corpus of the toy world: the role WordNet plays for ImageNet in negative-label mining.

The toy vocabulary (shape names, texture and scene words, attributes) is in the toy CLIP's
pretraining captions; the distractor words are everyday English words the text tower never saw
in training.
"""

from __future__ import annotations

from oodbench.toy import generator as gen

_TEXTURE_NOUNS = (
    "texture",
    "pattern",
    "stripes",
    "checkerboard",
    "tiles",
    "grid",
    "dots",
    "waves",
    "noise",
    "static",
    "fragments",
    "pile",
    "debris",
    "background",
    "scene",
    "wall",
    "landscape",
    "countryside",
    "view",
    "hills",
    "skyline",
    "buildings",
    "town",
    "zigzag",
    "chevron",
    "rings",
    "target",
    "patch",
    "clutter",
    "outline",
)
_DISTRACTOR_NOUNS = """
dog cat horse cow sheep pig goat rabbit mouse lion tiger bear wolf fox deer monkey elephant
giraffe zebra camel kangaroo whale dolphin shark octopus crab lobster snail frog turtle snake
lizard eagle owl parrot duck goose swan chicken penguin bee ant spider butterfly beetle mosquito
car bus truck bicycle motorcycle train airplane helicopter boat ship submarine rocket tractor
ambulance taxi wheel engine road bridge tunnel city village street building tower castle church
school hospital library museum factory farm barn garden park forest jungle desert mountain hill
valley river lake ocean beach island volcano cave glacier meadow field table chair sofa bed lamp
desk shelf cupboard door window curtain carpet pillow blanket mirror clock vase bottle glass
plate bowl spoon fork knife pan pot kettle oven fridge sink towel soap brush comb scissors
pencil pen paper book notebook envelope stamp letter computer keyboard screen phone camera radio
television guitar piano violin drum trumpet flute microphone speaker headphones ball bat racket
net goal helmet glove shoe boot sock hat cap scarf coat jacket shirt dress skirt trousers belt
button zipper ring necklace bracelet watch wallet bag basket box barrel bucket ladder rope chain
hammer screwdriver wrench saw nail screw bolt drill shovel rake axe candle lantern torch match
fire smoke ice snow rain storm fog rainbow sun sky planet comet galaxy apple banana orange grape
lemon cherry strawberry pear peach plum melon pineapple carrot potato tomato onion garlic pepper
cabbage lettuce corn rice bread cheese butter egg milk coffee tea juice soup cake cookie pie
pizza sandwich burger noodle chocolate candy honey salt sugar flour coin bank money ticket map
compass flag sign fence gate wallpaper statue painting photograph sculpture toy puzzle doll kite
balloon robot machine battery cable wire pipe valve pump motor magnet lens telescope microscope
doctor teacher farmer soldier pilot sailor chef artist singer dancer child baby woman man king
queen
""".split()
_ATTRIBUTE_ADJECTIVES = (
    *gen.SIZES,
    *gen.BACKGROUND_COLOURS,
    "striped",
    "dotted",
    "outlined",
    "solid",
    "checkered",
    "wavy",
    "random",
    "noisy",
    "grainy",
    "cluttered",
    "scattered",
    "messy",
    "blank",
    "empty",
    "plain",
    "spotted",
    "lined",
    "rippled",
    "gradient",
    "hilly",
    "ringed",
)
_DISTRACTOR_ADJECTIVES = """
happy sad angry calm brave shy lazy busy quiet loud fast slow old young new ancient modern fresh
rotten hot cold warm cool wet dry soft hard smooth rough heavy light strong weak rich poor cheap
expensive clean dirty tidy broken shiny dull bright dark sweet sour bitter salty spicy tasty
delicious hungry thirsty sleepy tired awake alive dead wild tame friendly hostile polite rude
honest famous strange familiar rare common simple complex easy difficult early late public
private safe dangerous healthy sick wooden metal plastic glass golden silver paper leather
woolen cotton electric digital musical medical royal rural urban tropical arctic frozen sunny
rainy windy cloudy foggy stormy
""".split()

TOY_NOUNS: list[str] = sorted(set(gen.SHAPES) | set(_TEXTURE_NOUNS) | set(_DISTRACTOR_NOUNS))
TOY_ADJECTIVES: list[str] = sorted(set(_ATTRIBUTE_ADJECTIVES) | set(_DISTRACTOR_ADJECTIVES))
